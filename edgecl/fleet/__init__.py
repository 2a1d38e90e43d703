"""Fleet learning: devices fine-tune a shared detector together over Flower.

Layering: this package orchestrates processes and the network, like ``edgecl.runtime`` beside
which it sits (it may import ``runtime``, ``continual``, ``models``, ``data``; the library
layers never import it). The averaging math is pure and lives below, in
:mod:`edgecl.continual.federated`, where a continual-learning strategy can use it too.

Modules: ``weights`` (model <-> named arrays, name-aligned heads), ``device`` (a device's fleet
round: fine-tune the global model, report; adopt a new global model through the gate and the
registry), ``wire`` (arrays on the wire, authentication), ``store`` (the server's global model
on disk), ``strategy`` (the Flower strategy: gated, name-aligned FedAvg), ``server`` and
``client`` (the two Flower roles), ``simulate`` (server and devices as local processes).
Flower is an optional dependency (``pip install edgecl[fleet]``); nothing here imports it at
import time.
"""
