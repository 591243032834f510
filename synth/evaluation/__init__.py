"""Measuring data and the tools that judge it: the judge's calibration."""
