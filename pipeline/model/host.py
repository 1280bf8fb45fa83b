"""The host's other tasks: FPU-using processes, kernel threads, and each VMM's other threads.

* **host processes** (``host_tasks``): CPU bursts of ``host_busy_us`` separated
  by sleeps of ``host_sleep_us`` (``S``); they use the FPU, so when they run
  on a CPU they take its registers from a vCPU that ran there;
* **kworkers**: one per CPU, pinned, woken ``kthread_hz`` times a second by a
  timer on that CPU, run ``kthread_us`` and sleep (``I``); kernel threads have
  no FPU state and leave the CPU's registers alone;
* **VMM main thread** (``qemu-system-x86``): wakes ``vmm_main_hz`` times a
  second for ``vmm_main_us``;
* **VMM I/O thread** (``IO iothread0``): woken by a vCPU's virtio
  notification (logged on the vCPU's CPU), works ``iothread_us`` and injects
  an interrupt into that vCPU (irqfd), which wakes it if it is halted.
"""

from __future__ import annotations

from pipeline.model.schedule import ROLE_MIGRATION, ROLE_VMM_MAIN, S_I, S_S
from pipeline.model.scheduler import A_HOST_END, A_IO_END, A_KW_END, C_KWORKER, SLEEPING, W_HOST


class HostMixin:
    """Behaviour of the non-vCPU tasks; needs the attributes Simulation sets up."""

    def host_wake(self, tid: int, wgen: int, t: int) -> None:
        """A host process or VMM main thread's sleep is over (its timer fires where it slept)."""
        task = self.tasks[tid]
        if task.role == ROLE_MIGRATION:
            self.migration_wake(task, wgen, t)
            return
        if wgen != task.wgen or task.state != SLEEPING:
            return
        mean = self.main_busy_ns if task.role == ROLE_VMM_MAIN else self.host_busy_ns
        task.remaining = self.draws.exp_ns(mean)
        self.wake(task, t, task.cpu)

    def host_end(self, task, t: int) -> None:
        """End of a burst: sleep."""
        task.wgen += 1
        mean = self.main_sleep_ns if task.role == ROLE_VMM_MAIN else self.host_sleep_ns
        self._push(t + self.draws.exp_ns(mean), W_HOST, task.id, task.wgen)
        self.switch_out(task.cpu, t, S_S, False)

    def kworker_timer(self, cpu: int, _gen: int, t: int) -> None:
        """A timer on ``cpu`` queues work for its kworker."""
        self._push(t + self.draws.gap_ns(self.p.kthread_hz), C_KWORKER, cpu, 0)
        kw = self.tasks[self.kworker[cpu]]
        if kw.state == SLEEPING:
            kw.remaining = self.draws.lat_ns(self.kthread_ns)
            self.wake(kw, t, cpu)

    def kworker_end(self, task, t: int) -> None:
        """The kworker is done: it sleeps as an idle kthread (``I``)."""
        self.switch_out(task.cpu, t, S_I, False)

    def iothread_notify(self, v, t: int, cpu: int) -> None:
        """vCPU ``v``'s virtio notification (ioeventfd) for its VM's I/O thread."""
        io = self.tasks[self.iothread[v.vm]]
        io.queue.append(v.id)
        if io.state == SLEEPING:
            io.remaining = self.draws.exp_ns(self.iothread_ns)
            self.wake(io, t, cpu)

    def iothread_end(self, io, t: int) -> None:
        """One request done: interrupt the vCPU that asked, then the next request or sleep."""
        vid = io.queue.popleft()
        self.vcpu_interrupt(self.tasks[vid], t, io.cpu)
        if io.queue:
            io.remaining = self.draws.exp_ns(self.iothread_ns)
            io.end_at = t + io.remaining
            self._at(io, io.end_at, A_IO_END)
        else:
            self.switch_out(io.cpu, t, S_S, False)

    def host_action(self, action: int, task, t: int) -> None:
        """Run a scheduled action of a non-vCPU task."""
        if action == A_HOST_END:
            if task.role == ROLE_MIGRATION:
                self.migration_step(task, t)
            else:
                self.host_end(task, t)
        elif action == A_KW_END:
            self.kworker_end(task, t)
        elif action == A_IO_END:
            self.iothread_end(task, t)
