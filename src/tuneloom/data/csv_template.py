"""The CSV template users start from: the two columns the hosted product's uploader expected.

`input.data.text.raw` holds one sectioned example per row; `input.data.concepts[*].id` stays empty
and exists only so the same file also uploads to the hosted product unchanged.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tuneloom.errors import DataFileError

TEMPLATE_COLUMNS = ("input.data.text.raw", "input.data.concepts[*].id")

_SENTIMENT = (
    "### Instruction: What is the sentiment of this tweet? Please choose an answer from "
    "{negative/neutral/positive} ### Human: "
)
_CONTEXT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request."
)
TEMPLATE_ROWS = (
    _SENTIMENT + "Net sales of the Paper segment decreased to EUR 221.6 mn in the second quarter of 2009 "
    "from EUR 241.1 mn in the second quarter of 2008, while operating profit excluding non-recurring "
    "items rose to EUR 8.0 mn from EUR 7.6 mn . ### Assistant: negative.",
    _SENTIMENT + "Stora Enso said DeLight was suitable for a wide range of applications including food , "
    "cosmetics , home decoration and leisure products . ### Assistant: neutral.",
    _SENTIMENT + "Earnings per share were higher at 0.48 against 0.37 a year before and ahead of market "
    "consensus of 0.40 eur . ### Assistant: positive.",
    "### Instruction: Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request. ### Human: What is the capital of Vietnam? ### Assistant: The capital of "
    "Vietnam is Hanoi.",
    _CONTEXT + " ### Instruction: Summarize the given passage. ### Input: A recent study showed that global "
    "climate change is one of the most important challenges facing the world today. The consequences of "
    "global warming include rising sea levels, extreme weather events and biodiversity loss. Climate "
    "change is caused by human activities such as burning fossil fuels, and if unchecked will have "
    "long-term and devastating impacts on the planet. ### Response: A recent study revealed that global "
    "climate change is one of the world’s most pressing issues. In addition to rising sea levels, extreme "
    "weather events and biodiversity loss, it is caused largely by human activities like burning fossil "
    "fuels. If left unchecked, climate change will have far-reaching and devastating consequences.",
    _CONTEXT + " ### Instruction: Translate the following phrase into French. ### Input: I miss you "
    "### Response: Je te manque.",
)


def write_csv_template(path: Path) -> None:
    """Write the template as UTF-8 CSV (every cell quoted, so commas inside examples are safe)."""
    try:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
            writer.writerow(TEMPLATE_COLUMNS)
            writer.writerows((row, "") for row in TEMPLATE_ROWS)
    except OSError as error:
        raise DataFileError(
            f"'{path}' cannot be written: {error.strerror or error}", details={"path": str(path)}
        ) from None
