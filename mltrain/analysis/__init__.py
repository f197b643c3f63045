"""``mltrain-compare`` (:mod:`.compare`, the command) over three sub-packages: :mod:`.judging`
(reading runs, the judges and the ratios r, r_same, r_env), :mod:`.reports` (summary, headline,
tables, CSVs) and :mod:`.figures` (plots). Reports and figures import judging, never each other
(pyproject.toml's contracts)."""
