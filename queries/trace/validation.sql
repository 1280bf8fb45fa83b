-- validation: The replay of the recording kernel's policy against what that kernel logged, per vCPU thread.
--
-- The table `fpureplay replay` writes beside runs and fpu_ops (and
-- `fpureplay validate` prints): for each vCPU thread and check, the count
-- the replay predicts for the policy the recording kernel ran and the count
-- the trace's own events show.  kvm_fpu_load and kvm_fpu_unload must match
-- exactly; cs_saves (and cs_saves_in_kvm_run) compare the policy's
-- context-switch saves with x86_fpu_regs_deactivated lines, and
-- deferred_restores the deferred restores with x86_fpu_regs_activated lines;
-- causes names the known reasons for a difference (unlogged switches,
-- kernel_fpu_begin() users, vCPUs that wake and sleep again without entering
-- the guest).
--
-- Parameters: none
--
-- Columns:
--   source         trace source id
--   policy         the policy compared: the recording kernel's, as the replay detected it
--   pid            the vCPU thread
--   comm           its task name
--   check          what is compared (kvm_fpu_load, kvm_fpu_unload, cs_saves, ...)
--   predicted      the count the replay predicts
--   observed       the count the trace shows
--   difference     predicted - observed
--   agreement_pct  percent agreement the replay reports for the check (100 when both counts are 0)
--   causes         known causes of the difference (NULL when none)

SELECT
  source,
  policy,
  pid,
  comm,
  "check",
  predicted,
  observed,
  difference,
  agreement_pct,
  causes
FROM validation
ORDER BY
  source,
  pid,
  CASE "check"
    WHEN 'kvm_fpu_load' THEN 0
    WHEN 'kvm_fpu_unload' THEN 1
    WHEN 'cs_saves' THEN 2
    WHEN 'cs_saves_in_kvm_run' THEN 3
    WHEN 'deferred_restores' THEN 4
    ELSE 5
  END,
  "check"
