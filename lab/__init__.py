"""The lab above model.py and utils.py: the run machinery (train, runner), the experiments, their figures, report
sections and benchmarks. Its commands run as `python -m lab.<name>` from the repo root."""
