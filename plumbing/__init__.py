"""The plumbing below model.py and utils.py: settings and names, data, files and signals, run folders, the shared
flags, statistics. It imports nothing from the root or from lab/."""
