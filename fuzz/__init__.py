"""Coverage-guided fuzz targets (atheris/libFuzzer) for every parser and settings validator.

Each target takes the fuzzer's bytes, feeds them to one public entry point and lets any exception
other than `TuneloomError` escape: that is the crash libFuzzer reports. Targets also assert the
invariants a user relies on (row counts add up, settings stay in range), so a wrong answer is a
crash too. `python -m fuzz.run --seconds 600 TARGET` runs one by hand; `tests/test_fuzz.py` runs
every target for a few seconds inside `make test`.
"""
