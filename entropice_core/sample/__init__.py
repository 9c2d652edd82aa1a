"""The embedded sample region, written in the real sources' formats."""
