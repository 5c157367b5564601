"""Data shipped with Handles Studio: the model catalog (``models.json``), icons, sample data.

A package so that ``importlib.resources.files("resources")`` finds the files in any install.
"""
