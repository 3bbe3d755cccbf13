"""Reading run directories and comparing algorithms: `mbpo-ray report` (docs/report.md).

stats.py holds the statistics (plain numpy), references.py the random and reference returns that
normalise scores, options.py the command line, report.py the reading, tables, plots and output.
"""
