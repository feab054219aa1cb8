"""Training data: read sectioned text, CSV and JSONL files into examples, with a report on bad rows.

The public API other packages use; everything else in `tuneloom.data` is an implementation detail.
"""

from tuneloom.data.csv_template import write_csv_template
from tuneloom.data.parse import ParsedFile, check_tolerance, iter_rows, parse_file
from tuneloom.data.sections import (
    RESPONSE_HEADERS,
    parse_sectioned_line,
    render_sections,
    split_sections,
)
from tuneloom.data.sniff import FORMATS, detect_format
from tuneloom.data.types import DataReport, Example, InvalidRow

__all__ = [
    "FORMATS",
    "RESPONSE_HEADERS",
    "DataReport",
    "Example",
    "InvalidRow",
    "ParsedFile",
    "check_tolerance",
    "detect_format",
    "iter_rows",
    "parse_file",
    "parse_sectioned_line",
    "render_sections",
    "split_sections",
    "write_csv_template",
]
