"""Geometry: lifting depth to 3D, filling the background behind objects, warp plans.

Import submodules directly (``core.geometry.warp``); this package imports nothing heavy.
"""
