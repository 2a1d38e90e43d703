"""Calibration: IDER for the YOLO class branch, detection ECE (D-ECE) and reliability bins."""
