"""Everything about datasets: the one YOLO label and image rule, importers (YOLO, VOC, COCO),
task splits and the ``tasks.yaml`` contract, and the built-in scenario generator."""
