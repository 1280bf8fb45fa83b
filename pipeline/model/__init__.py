"""The built-in vCPU model: a discrete-event KVM host that writes the traces a kernel would.

The pieces, in data-flow order:

* :mod:`.params` — every parameter with its default, unit and distribution, and the presets;
* :mod:`.simulation` (with :mod:`.scheduler`, :mod:`.vcpu`, :mod:`.host`) — the host:
  pCPUs with run queues, host tasks, VMs whose vCPU threads enter and leave the guest;
  it produces a :class:`~.schedule.Schedule` (records in time order, replay steps);
* :mod:`.truth` — drives the shared policy state machines (:mod:`pipeline.policies`)
  over the schedule's own steps: the ground truth, and which FPU lines the recording
  kernel prints;
* :mod:`.lines` — the ordered table of trace lines for one recording policy;
* :mod:`.tracefs`, :mod:`.perfscript` — text per kernel era (:mod:`.eras`);
  :mod:`.frame` — the `events` table directly (the fast path to a dataset);
* :mod:`.api` — ``generate()`` ties them together; :mod:`.cli` holds the commands.

Importing this package imports nothing heavy; numpy and polars load on first use.
"""
