"""Trial results as pandas, the paper's tables beside ours, and the figures of the report."""

from romi.analysis.results import load_results, summarize_trials
from romi.analysis.tables import PaperTable, paper_numbers, paper_table

__all__ = ["PaperTable", "load_results", "paper_numbers", "paper_table", "summarize_trials"]
