"""The Flower strategy of the fleet server: forgetting-gated FedAvg with name-aligned heads.

One fleet round is one Flower round:

1. ``configure_fit``: sample ``fleet.fraction_fit`` of the connected devices (at least
   ``fleet.min_devices``) and send each the global model, its class names and a nonce.
2. devices fine-tune and reply (or reply ``skipped``: busy, no data).
3. ``aggregate_fit``: refuse unauthenticated replies, drop failures (a device that
   disconnected or timed out mid-round is simply absent), screen the rest with the forgetting
   gate, average by name (:func:`edgecl.continual.federated.fedavg_by_name`), save the new
   global model atomically (:class:`~edgecl.fleet.store.GlobalStore`) and log one line per
   device saying what happened to its update and why.
4. ``configure_evaluate``: send the new global model to every connected device to adopt
   (each gates it on its own held-out slice); ``aggregate_evaluate`` records what they did.

The server's state is the strategy's (``round``, ``arrays``, ``names``); Flower's own
``Parameters`` only carry the wire form. Round numbers continue across server restarts.
Built on Flower's ``flwr.server.strategy.Strategy`` (the ``start_server`` API, see
:mod:`edgecl.fleet.server`).
"""

from __future__ import annotations

import logging
import time

from edgecl.continual.federated import Update, fedavg_by_name
from edgecl.fleet import wire
from edgecl.fleet.store import GlobalStore

log = logging.getLogger(__name__)


def make_strategy(fleet_cfg, store: GlobalStore, *, initial=None, on_round=None):
    """Build the fleet's Flower strategy.

    Args:
        fleet_cfg: the ``fleet`` config section.
        store: where the global model is kept.
        initial: ``(round, arrays, names)`` to start from (default: the store's last model,
            else ``fleet.initial_model``, else a fresh model, see
            :func:`edgecl.fleet.weights.initial_global`).
        on_round: optional callback with each finished round's record (dict).

    Returns:
        A ``flwr.server.strategy.Strategy`` instance.
    """
    from flwr.common import (
        EvaluateIns,
        FitIns,
        ndarrays_to_parameters,
        parameters_to_ndarrays,
    )
    from flwr.server.strategy import Strategy

    class FleetStrategy(Strategy):
        """Forgetting-gated, name-aligned FedAvg (see the module docstring)."""

        def __init__(self):
            loaded = initial if initial is not None else store.load()
            if loaded is None and fleet_cfg.initial_model:
                from edgecl.fleet.weights import global_from_checkpoint

                loaded = (0, *global_from_checkpoint(fleet_cfg.initial_model))
                log.info("fleet: starting from %s (%d classes)", fleet_cfg.initial_model,
                         len(loaded[2]))
            elif loaded is None:
                from edgecl.fleet.weights import initial_global

                loaded = (0, initial_global(fleet_cfg.seed), [])
                log.info("fleet: starting from a fresh global model (seed %d)", fleet_cfg.seed)
            else:
                log.info("fleet: resuming after round %d with %d classes", loaded[0], len(loaded[2]))
            self.offset, self.arrays, self.names = loaded
            self.token = wire.resolve_token(fleet_cfg.token)
            self.nonces: dict[int, str] = {}
            self.record: dict = {}
            self.changed = False

        def fleet_round(self, server_round: int) -> int:
            return self.offset + server_round

        def _ins_parameters(self):
            keys, arrays = wire.to_wire(self.arrays, fleet_cfg.wire_dtype)
            params = ndarrays_to_parameters(arrays)
            return keys, params, sum(len(t) for t in params.tensors)

        def _config(self, rnd: int, keys) -> dict:
            nonce = wire.new_nonce()
            self.nonces[rnd] = nonce
            return {"round": rnd, "names": wire.dumps(self.names), "keys": wire.dumps(keys),
                    "nonce": nonce}

        def initialize_parameters(self, client_manager):
            return self._ins_parameters()[1]  # the server's own model: no client is asked

        def configure_fit(self, server_round, parameters, client_manager):
            rnd = self.fleet_round(server_round)
            available = client_manager.num_available()
            want = max(int(fleet_cfg.min_devices), int(round(available * fleet_cfg.fraction_fit)))
            clients = client_manager.sample(num_clients=want, min_num_clients=fleet_cfg.min_devices)
            keys, params, nbytes = self._ins_parameters()
            ins = FitIns(params, self._config(rnd, keys))
            self.changed = False
            self.record = {"round": rnd, "started_s": round(time.time(), 3), "sampled": len(clients),
                           "bytes_down": nbytes * len(clients), "bytes_up": 0, "devices": {}}
            log.info("fleet round %d: sent the global model (%d classes, %.1f MB) to %d devices",
                     rnd, len(self.names), nbytes / 1e6, len(clients))
            return [(c, ins) for c in clients]

        def _authentic(self, rnd: int, metrics: dict) -> bool:
            return wire.verify(self.token, self.nonces.get(rnd, ""), rnd,
                               str(metrics.get("device", "")), str(metrics.get("auth", "")))

        def aggregate_fit(self, server_round, results, failures):
            rnd = self.fleet_round(server_round)
            rec = self.record
            updates = []
            for _proxy, res in results:
                m = dict(res.metrics or {})
                device = str(m.get("device") or _proxy.cid)
                rec["bytes_up"] += sum(len(t) for t in res.parameters.tensors)
                if not self._authentic(rnd, m):
                    rec["devices"][device] = {"update": "refused", "why": "unauthenticated"}
                    log.warning("fleet round %d: update from %s refused: bad or missing "
                                "authentication", rnd, device)
                    continue
                if m.get("skipped"):
                    rec["devices"][device] = {"update": "skipped", "why": str(m["skipped"])}
                    log.info("fleet round %d: %s skipped the round: %s", rnd, device, m["skipped"])
                    continue
                arrays = wire.from_wire(wire.loads(m.get("keys"), []),
                                        parameters_to_ndarrays(res.parameters))
                updates.append(Update(device, arrays, wire.loads(m.get("names"), []),
                                      int(res.num_examples), wire.loads(m.get("forgetting"), {}),
                                      wire.loads(m.get("per_class_ap"), {})))
                rec["devices"][device] = {"samples": int(res.num_examples),
                                          "steps": int(m.get("steps", 0)),
                                          "per_class_ap": wire.loads(m.get("per_class_ap"), {}),
                                          "forgetting": wire.loads(m.get("forgetting"), {})}
            for failure in failures:
                why = (f"{type(failure).__name__}: {failure}" if isinstance(failure, BaseException)
                       else "the device replied with an error")
                log.warning("fleet round %d: a device dropped out of the round (%s)", rnd, why)
                rec.setdefault("failures", []).append(why[:200])
            if not updates:
                log.warning("fleet round %d: no usable update; the global model stays as it was", rnd)
                return None, {}
            agg = fedavg_by_name(updates, self.arrays, self.names,
                                 max_forgetting=fleet_cfg.max_forgetting,
                                 action=fleet_cfg.forgetting_action)
            for d in agg.decisions:
                (log.info if not d.dropped and d.factor == 1.0 else log.warning)(
                    "fleet round %d: update %s (weight %.2f)", rnd, d.reason, agg.weights[d.device])
                rec["devices"][d.device].update(update="kept" if d.factor == 1.0 else (
                    "dropped" if d.dropped else "down-weighted"), why=d.reason,
                    weight=round(agg.weights[d.device], 4))
            for key, devices in agg.skipped_keys.items():
                log.warning("fleet round %d: tensor %s of %s left out (shape differs)", rnd, key, devices)
            if all(d.dropped for d in agg.decisions):
                log.warning("fleet round %d: every update was dropped; the global model stays", rnd)
                return None, {}
            new = [n for n in agg.names if n not in self.names]
            if new:
                log.info("fleet round %d: classes new to the fleet: %s (from %s)", rnd, new,
                         {n: agg.contributors[n] for n in new})
            self.arrays, self.names = agg.arrays, agg.names
            self.changed = True
            store.save(rnd, self.arrays, self.names)
            rec["names"] = list(self.names)
            keys, arrays = wire.to_wire(self.arrays, fleet_cfg.wire_dtype)
            return ndarrays_to_parameters(arrays), {"devices": len(updates)}

        def configure_evaluate(self, server_round, parameters, client_manager):
            rnd = self.fleet_round(server_round)
            if not self.changed or client_manager.num_available() == 0:
                self._finish_round()
                return []
            clients = list(client_manager.all().values())
            keys, params, nbytes = self._ins_parameters()
            self.record["bytes_down"] = self.record.get("bytes_down", 0) + nbytes * len(clients)
            ins = EvaluateIns(params, self._config(rnd, keys))  # one nonce for the round
            return [(c, ins) for c in clients]

        def aggregate_evaluate(self, server_round, results, failures):
            rnd = self.fleet_round(server_round)
            rec = self.record
            adopted = {}
            for _proxy, res in results:
                m = dict(res.metrics or {})
                device = str(m.get("device") or _proxy.cid)
                if not self._authentic(rnd, m):
                    log.warning("fleet round %d: adoption report from %s refused: bad or "
                                "missing authentication", rnd, device)
                    continue
                adopted[device] = {"status": str(m.get("status", "")),
                                   "reason": str(m.get("reason", "")),
                                   "version": str(m.get("version", "")),
                                   "per_class_ap": wire.loads(m.get("per_class_ap"), {}),
                                   "test_ap": wire.loads(m.get("test_ap"), None)}
                log.info("fleet round %d: %s %s the global model (%s)", rnd, device,
                         adopted[device]["status"], adopted[device]["reason"])
            for failure in failures:
                log.warning("fleet round %d: a device dropped out of adoption (%s)", rnd,
                            type(failure).__name__ if isinstance(failure, BaseException) else "error")
            rec["adoption"] = adopted
            self._finish_round()
            return None, {}

        def _finish_round(self):
            rec = self.record
            if not rec:
                return
            rec["bytes"] = rec.get("bytes_down", 0) + rec.get("bytes_up", 0)
            rec["seconds"] = round(time.time() - rec.get("started_s", time.time()), 1)
            store.append_round(rec)
            if on_round is not None:
                on_round(rec)
            self.record = {}

        def evaluate(self, server_round, parameters):
            return None  # no server-side data: devices evaluate on their own held-out slices

    return FleetStrategy()
