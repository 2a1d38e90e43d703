"""The Flower strategy of the fleet server: forgetting-gated FedAvg with name-aligned heads.

One fleet round is one Flower round:

1. ``configure_fit``: sample ``fleet.fraction_fit`` of the connected devices that proved they
   hold the fleet's token (at least ``fleet.min_devices``) and send each the global model, its
   class names, its architecture (the model yaml it was started from,
   :func:`edgecl.fleet.weights.model_arch`) and a nonce.
2. devices fine-tune and reply (or reply ``skipped``: busy, no data).
3. ``aggregate_fit``: refuse unauthenticated replies, drop failures (a device that disconnected or
   timed out mid-round is simply absent), refuse malformed replies each on its own (bad JSON, keys
   that do not match the arrays, non-finite weights, class names a class registry would refuse or
   that name one class twice, class rows that do not match the names, tensors of another
   architecture than the global model's, no sample: one warning naming the device and why, counted
   in ``faults``), fold class names that differ only in case onto the fleet's first spelling,
   screen the rest with the forgetting gate, average by name
   (:func:`edgecl.continual.federated.fedavg_by_name`), save the new global model atomically
   (:class:`~edgecl.fleet.store.GlobalStore`; never an average with non-finite weights) and log one
   line per device saying what happened to its update and why.
4. ``configure_evaluate``: send the new global model to every connected device that proved it
   holds the token, to adopt (each gates it on its own held-out slice); ``aggregate_evaluate``
   records what they did (a malformed report is refused and recorded as ``refused``).

Authentication. With a fleet token, a connection gets no model before it proves it holds the
token: the first time it is sampled, the server asks it (Flower's ``get_properties``) to sign
a fresh nonce, and sends weights only to connections whose signature verifies
(:meth:`FleetStrategy._admitted`; a connection that signs wrongly is refused for its life, with
one warning). Replies are signed as well, with each round's nonce. Without a token (loopback
only) every connection is admitted.

The server's state is the strategy's (``round``, ``arrays``, ``names``, ``arch``); Flower's own
``Parameters`` only carry the wire form. Round numbers continue across server restarts.
Built on Flower's ``flwr.server.strategy.Strategy`` (the ``start_server`` API, see
:mod:`edgecl.fleet.server`).
"""

from __future__ import annotations

import logging
import math
import shlex
import time
from numbers import Integral, Real

import numpy as np

from edgecl.config import RULES
from edgecl.data.class_names import loose_class_name
from edgecl.continual.federated import Update, fedavg_by_name, is_class_row_key
from edgecl.errors import EdgeclError, LabelError
from edgecl.fleet import wire
from edgecl.fleet.store import GlobalStore
from edgecl.fleet.weights import arch_label, head_problem, non_finite_key
from edgecl.models.classes import MAX_CLASSES, clean_name

log = logging.getLogger(__name__)

MAX_SAMPLES = RULES["memory.capacity"].hi
"""The largest sample count an update may claim (a device trains on its replay memory)."""
DOMINANT_SHARE = 0.9
"""A share of the average's weight above which one of several updates is named: FedAvg weighs
by the samples each device reports, and one device's claim (a memory far larger than the
others', a client that misreports) makes every other update count for almost nothing."""

WAIT_LOG_S = 60
"""While fewer than ``fleet.min_devices`` devices are connected, say so this often (seconds)."""
HELLO_TIMEOUT_S = 30.0
"""How long a connection has to answer the server's token check (seconds)."""
HELLO_POLL_S = 5.0
"""While fewer than ``fleet.min_devices`` connections hold the token, check again this often."""


UNAUTHENTICATED = ("bad or missing authentication: its fleet token differs from the server's, "
                   "or it has none")


def failure_reason(exc: BaseException, waited_s: float, timeout_s: float) -> str:
    """Why a device dropped out of a round, in words, from the exception Flower reports.

    Args:
        exc: the failure (Flower's ``GrpcBridgeClosed`` when the device's connection closed,
            which is also how a reply missing past ``fleet.round_timeout_s`` ends).
        waited_s: seconds since the request was sent.
        timeout_s: ``fleet.round_timeout_s``.

    Returns:
        E.g. ``"its connection closed: it stopped, crashed or lost its network"``.
    """
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) or (name == "GrpcBridgeClosed" and waited_s >= 0.98 * timeout_s):
        return f"no reply within fleet.round_timeout_s ({timeout_s:g} s)"
    if name == "GrpcBridgeClosed":
        return "its connection closed: it stopped, crashed or lost its network"
    return f"{name}: {exc}" if str(exc) else name


class RefusedReply(ValueError):
    """A device's reply breaks the wire rules; the message says how (one line for the log)."""


def _short(value, limit: int = 60) -> str:
    """``repr`` of a value a device sent (control characters escaped), at most ``limit`` chars."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_field(metrics: dict, key: str, default):
    """A JSON-encoded metrics field, or ``default`` when absent.

    Raises:
        RefusedReply: the field is not valid JSON text.
    """
    try:
        return wire.loads(metrics.get(key), default)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise RefusedReply(f"{key} is not valid JSON ({_short(metrics.get(key))})") from None


def _strings(value, what: str) -> list[str]:
    """``value`` when it is a list of strings.

    Raises:
        RefusedReply: anything else (a string is not a list of names: ``"car"`` is not
            ``["c", "a", "r"]``).
    """
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RefusedReply(f"{what} are not a list of strings ({_short(value)})")
    return value


def _is_finite_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # a JSON integer past float's range
        return False


def check_scores(value, what: str) -> dict:
    """A reported ``class name -> number`` dict (per-class AP, forgetting), checked.

    ``None`` stands for a value the device could not measure (it sends non-finite values that
    way) and is kept; the forgetting gate counts it as unbounded.

    Args:
        value: the decoded JSON value.
        what: the field's name (for the message).

    Returns:
        name -> float or ``None``.

    Raises:
        RefusedReply: not a dict, or a value that is neither a finite number nor ``None``.
    """
    if not isinstance(value, dict):
        raise RefusedReply(f"{what} is not a dict of class name -> number ({_short(value)})")
    out = {}
    for name, number in value.items():
        if number is not None and not _is_finite_number(number):
            raise RefusedReply(f"{what} of class {_short(name)} is not a finite number "
                               f"({_short(number)})")
        out[str(name)] = None if number is None else float(number)
    return out


def check_names(value) -> list[str]:
    """An update's class names, checked with the class registry's own name rule.

    Args:
        value: the decoded JSON value of the reply's ``names``.

    Returns:
        The names cleaned by :func:`edgecl.models.classes.clean_name` (surrounding white space
        dropped, NFC form), in the reply's order.

    Raises:
        RefusedReply: not a list of strings, more than
            :data:`~edgecl.models.classes.MAX_CLASSES` names, a name a class registry would
            refuse (control or invisible characters, empty, too long), or two names that are
            one class (equal, or differing only in case: the rule of
            :func:`~edgecl.models.classes.known_spelling`).
    """
    names = _strings(value, "class names")
    if len(names) > MAX_CLASSES:
        raise RefusedReply(f"{len(names)} class names, more than a class registry holds "
                           f"({MAX_CLASSES})")
    cleaned: list[str] = []
    folded: dict[str, str] = {}
    for raw in names:
        try:
            name = clean_name(raw)
        except LabelError as exc:
            raise RefusedReply(f"invalid class name: {exc}") from None
        twin = folded.get(name.casefold())
        if twin == name:
            raise RefusedReply(f"class name {_short(name)} appears twice")
        if twin is not None:
            raise RefusedReply(f"class names {_short(twin)} and {_short(name)} are one class "
                               f"(names differing only in case are the same class)")
        folded[name.casefold()] = name
        cleaned.append(name)
    return cleaned


def check_arrays(keys: list[str], arrays: list, names: list[str]) -> dict[str, np.ndarray]:
    """An update's tensors by key, checked: one array per key, finite, one class row per name.

    Args:
        keys: the reply's tensor keys (a list of strings).
        arrays: the reply's arrays, in ``keys`` order.
        names: the update's (checked) class names.

    Returns:
        key -> float32 array.

    Raises:
        RefusedReply: duplicate keys, a count that differs from the arrays', a tensor that is
            not numeric, non-finite weights, or a class-row tensor whose row count differs
            from the number of class names.
    """
    if len(set(keys)) != len(keys):
        raise RefusedReply("duplicate tensor keys")
    if len(keys) != len(arrays):
        raise RefusedReply(f"{len(keys)} tensor keys for {len(arrays)} arrays")
    out = {}
    for key, array in zip(keys, arrays):
        try:
            value = np.asarray(array, dtype=np.float32)
        except (TypeError, ValueError):
            raise RefusedReply(f"tensor {_short(key)} is not numeric") from None
        if not np.isfinite(value).all():
            raise RefusedReply(f"non-finite weights (tensor {_short(key)})")
        if is_class_row_key(key) and (value.ndim == 0 or value.shape[0] != len(names)):
            rows = value.shape[0] if value.ndim else 0
            raise RefusedReply(f"tensor {_short(key)} has {rows} class rows for {len(names)} "
                               f"class names")
        out[key] = value
    return out


def check_architecture(arrays: dict[str, np.ndarray], global_arrays: dict[str, np.ndarray],
                       arch) -> None:
    """Refuse an update whose tensors are not those of the global model's architecture.

    A device builds the global model with the architecture the server sends, so its update has
    the global model's keys and shapes (class-row tensors: their row count follows the update's
    class names); a tensor the global model lacks, or one of another shape, comes from another
    model (another family or size, or a device that did not rebuild the fleet's architecture)
    and would corrupt the average. A tensor the update lacks keeps its global value
    (:func:`~edgecl.continual.federated.fedavg_by_name`).

    Args:
        arrays: the update's checked tensors.
        global_arrays: the global model's tensors (nothing is checked while it is empty).
        arch: the global model's architecture (for the message).

    Raises:
        RefusedReply: one line naming the architecture and the first tensor that differs.
    """
    if not global_arrays:
        return
    label = arch_label(arch)
    extra = [k for k in arrays if k not in global_arrays]
    if extra:
        raise RefusedReply(f"{len(extra)} of its tensors are not in the fleet's {label} model "
                           f"(first: {_short(extra[0])}); the device runs another architecture")
    for key, value in arrays.items():
        want = np.shape(global_arrays[key])
        have = value.shape
        if is_class_row_key(key):
            want, have = want[1:], have[1:]
        if tuple(have) != tuple(want):
            raise RefusedReply(f"tensor {_short(key)} has shape {tuple(value.shape)}, the fleet's "
                               f"{label} model has {tuple(np.shape(global_arrays[key]))}; the "
                               f"device runs another architecture")


def fleet_spelling(names: list[str], known: list[str]) -> list[str]:
    """Class names in the fleet's spelling: a name that differs from a known class only in case
    is that class (the rule of :func:`edgecl.models.classes.known_spelling`: the exact name
    first, else the first known spelling; here with a casefold index, as a fleet may know
    thousands of classes); else one that differs only in case, spaces and punctuation
    (:func:`~edgecl.data.class_names.loose_class_name`: ``other_vehicle`` is ``OtherVehicle``,
    as a device takes a fleet name; before, two devices that spelt it so in one round made two
    fleet classes, and each device gained an empty one).

    Args:
        names: an update's checked class names.
        known: the fleet's spellings so far (the global classes, then the names earlier updates
            of the round brought); names new to it are appended in place.

    Returns:
        The names, respelled.
    """
    exact = set(known)
    folded: dict[str, str] = {}
    loose: dict[str, str] = {}
    for name in known:
        folded.setdefault(name.casefold(), name)
        if loose_class_name(name):
            loose.setdefault(loose_class_name(name), name)
    out: list[str | None] = [name if name in exact else None for name in names]
    taken = {name for name in out if name is not None}
    for i, name in enumerate(names):
        if out[i] is not None:
            continue
        spelling = folded.get(name.casefold()) or loose.get(loose_class_name(name) or "\0")
        if spelling is None or spelling in taken:
            # new to the fleet; or the update holds both spellings as two classes: two stay
            spelling = name
            known.append(name)
            exact.add(name)
            folded.setdefault(name.casefold(), name)
            if loose_class_name(name):
                loose.setdefault(loose_class_name(name), name)
        out[i] = spelling
        taken.add(spelling)
    return [str(name) for name in out]


def _note_dominant(rnd: int, rec: dict, weights: dict[str, float]) -> None:
    """Warn, and record as ``dominant`` in the round's record, when one of two or more kept
    updates holds more than :data:`DOMINANT_SHARE` of the average's weight.

    Args:
        rnd: the fleet round.
        rec: the round's record (its ``devices`` entries hold each update's ``samples``).
        weights: device -> its normalised weight in the average (kept updates only).
    """
    if len(weights) < 2:
        return
    top, share = max(weights.items(), key=lambda kv: kv[1])
    if share <= DOMINANT_SHARE:
        return
    samples = {d: (rec.get("devices", {}).get(d) or {}).get("samples") for d in weights}
    others = ", ".join(f"{d} {samples[d]}" for d in sorted(weights) if d != top)
    log.warning("fleet round %d: %s's update holds %.0f %% of the average (FedAvg weighs by the "
                "samples each device reports: %s reports %s, %s): the other devices' updates "
                "count for almost nothing; check its memory.capacity and what it stores", rnd,
                top, 100 * share, top, samples[top], others)
    rec["dominant"] = {"device": top, "share": round(share, 4)}


def _note_close_names(rnd: int, new: list[str], known: list[str],
                      contributors: dict[str, list[str]]) -> None:
    """Warn of each class new to the fleet whose name is one slip from a class the fleet has, or
    from another new one (:func:`~edgecl.data.class_names.close_class_names`: 'Persons' beside
    'Person'): every device then learns two classes where its people meant one (a hint only;
    different words, 'people' and 'Person', are not matched: they may be two classes).

    Args:
        rnd: the fleet round.
        new: the class names new to the fleet this round.
        known: the fleet's names before it.
        contributors: name -> the devices whose samples taught it.
    """
    from edgecl.data.class_names import close_class_names

    close = close_class_names(new, known)
    for i, name in enumerate(new):
        if name not in close:
            close.update(close_class_names([name], new[:i]))
    for name, like in close.items():
        taught = ", ".join(contributors.get(name) or []) or "a device"
        log.warning("fleet round %d: the new fleet class %r is close to %r (taught by %s): if "
                    "they mean one class, run 'edgecl classes merge %s %s' on %s: its samples "
                    "of it then teach %r", rnd, name, like, taught, shlex.quote(name),
                    shlex.quote(like), taught, like)


def _own_key(record: dict, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``, ... when ``record`` already holds it."""
    key, n = name, 2
    while key in record:
        key, n = f"{name} ({n})", n + 1
    return key


def make_strategy(fleet_cfg, store: GlobalStore, *, initial=None, on_round=None):
    """Build the fleet's Flower strategy.

    Args:
        fleet_cfg: the ``fleet`` config section.
        store: where the global model is kept.
        initial: ``(round, arrays, names)`` or ``(round, arrays, names, arch)`` to start from
            (``arch``: the model yaml dict, ``None`` or absent for yolo11n; default: the
            store's last model, else ``fleet.initial_model`` with its own architecture, else a
            fresh yolo11n, see :func:`edgecl.fleet.weights.initial_global`).
        on_round: optional callback with each finished round's record (dict).

    Returns:
        A ``flwr.server.strategy.Strategy`` instance.
    """
    from flwr.common import (
        EvaluateIns,
        FitIns,
        GetPropertiesIns,
        ndarrays_to_parameters,
        parameters_to_ndarrays,
    )
    from flwr.server.criterion import Criterion
    from flwr.server.strategy import Strategy

    class Admitted(Criterion):
        """Flower sampling criterion: only connections whose token check passed."""

        def __init__(self, cids: set[str]):
            self.cids = cids

        def select(self, client) -> bool:
            """True for a device admitted to this round."""
            return str(client.cid) in self.cids

    class FleetStrategy(Strategy):
        """Forgetting-gated, name-aligned FedAvg (see the module docstring)."""

        def __init__(self):
            loaded = initial if initial is not None else store.load(with_arch=True)
            if loaded is None and fleet_cfg.initial_model:
                from edgecl.fleet.weights import global_from_checkpoint

                loaded = (0, *global_from_checkpoint(fleet_cfg.initial_model))
                log.info("fleet: starting from %s (%s, %d classes)", fleet_cfg.initial_model,
                         arch_label(loaded[3]), len(loaded[2]))
            elif loaded is None:
                from edgecl.fleet.weights import default_arch, initial_global

                loaded = (0, initial_global(fleet_cfg.seed), [], default_arch())
                log.info("fleet: starting from a fresh %s global model (seed %d)",
                         arch_label(loaded[3]), fleet_cfg.seed)
            else:
                log.info("fleet: resuming after round %d with the global model of round %d, "
                         "%d classes (%s)%s", max(loaded[0], store.last_round()), loaded[0],
                         len(loaded[2]), arch_label(loaded[3] if len(loaded) > 3 else None),
                         f"; fleet.initial_model {fleet_cfg.initial_model} is not read: it only "
                         f"starts a fleet that has no global model yet"
                         if fleet_cfg.initial_model and loaded[0] > 0 else "")
            self.saved_round, self.arrays, self.names = loaded[:3]  # the global model on disk
            # rounds go on after the last one logged: a round in which no update was usable
            # saved no model, and numbering on from the model would record it a second time
            self.offset = max(self.saved_round, store.last_round())
            self.arch = loaded[3] if len(loaded) > 3 else None
            self._check_loaded()
            self.token = wire.resolve_token(fleet_cfg.token)
            self.nonces: dict[int, str] = {}
            self.record: dict = {}
            self.changed = False
            self.averaged: list[str] = []  # devices whose update the round's model averages
            # the connections whose update that is: a second device under one of those names
            # (its update refused) must not count its samples as learnt
            self.averaged_cids: set[str] = set()
            self.faults = 0  # malformed replies refused since the server started
            self.device_names: dict[str, str] = {}  # connection id -> name the device gave
            # device name -> what it must hear of its last update (refused, a name twice),
            # sent with the next request: a refused device logged nothing of it
            self.notices: dict[str, str] = {}
            # connection id -> its notice, where two devices share a name and each must hear
            # its own (whose update was kept, whose refused)
            self.cid_notices: dict[str, str] = {}
            self.asked: set[str] = set()  # connection ids sent the round's current request
            self.asked_s = time.monotonic()
            self.started_mono_s = time.monotonic()
            self.verified: set[str] = set()  # connection ids whose token check passed
            self.refused: dict[str, str] = {}  # connection id -> why its token check failed
            self.named: set[str] = set()  # connection ids asked their name (no fleet token)

        def _check_loaded(self):
            """Refuse to start from a global model no device could use.

            Raises:
                EdgeclError: non-finite weights or an invalid class list (both would fail or
                    poison every device every round).
            """
            head = head_problem(self.arch)
            if head:  # e.g. a saved YOLO26 model: every device would fail every round
                raise EdgeclError(f"the fleet's global model (round {self.saved_round}, "
                                  f"{arch_label(self.arch)}) {head}; move {store.root} away to "
                                  f"start the fleet afresh")
            bad = non_finite_key(self.arrays)
            problem = f"non-finite weights (tensor {bad})" if bad is not None else None
            try:
                check_names(list(self.names))
            except RefusedReply as exc:
                problem = problem or f"an invalid class list: {exc}"
            if problem:
                raise EdgeclError(f"the fleet's global model (round {self.saved_round}) has {problem}; "
                                  f"restore an earlier one, or move {store.root} away to start "
                                  f"the fleet afresh")

        def fleet_round(self, server_round: int) -> int:
            """The fleet's round number (continued across server restarts) of Flower's round."""
            return self.offset + server_round

        def _ins_parameters(self):
            """The global model as Flower sends it: ``(keys, parameters, bytes on the wire,
            bytes of its arrays)``; the last is what a device logs of the model it received."""
            keys, arrays = wire.to_wire(self.arrays, fleet_cfg.wire_dtype)
            params = ndarrays_to_parameters(arrays)
            return (keys, params, sum(len(t) for t in params.tensors),
                    sum(a.nbytes for a in arrays))

        def _config(self, rnd: int, keys) -> dict:
            nonce = wire.new_nonce()
            self.nonces[rnd] = nonce
            config = {"round": rnd, "names": wire.dumps(self.names), "keys": wire.dumps(keys),
                      "nonce": nonce, "server_auth": wire.server_signature(self.token, nonce, rnd)}
            if self.arch is not None:  # absent: yolo11n (what a device assumes without it)
                config["arch"] = wire.dumps(self.arch)
            if self.notices:
                config["notices"] = wire.dumps(self.notices)
            config["round_timeout_s"] = float(fleet_cfg.round_timeout_s)  # said by a late device
            return config

        def _for_connection(self, config: dict, cid: str) -> dict:
            """The round's ``config`` as one connection gets it: the notice meant for it alone
            (two devices under one name), and its name out of ``averaged`` unless its own
            update is the one averaged."""
            name = self.device_names.get(cid)
            if name is None:
                return config
            config = dict(config)
            if cid in self.cid_notices:
                config["notices"] = wire.dumps({**self.notices, name: self.cid_notices[cid]})
            if "averaged" in config and cid not in self.averaged_cids:
                config["averaged"] = wire.dumps([n for n in self.averaged if n != name])
            return config

        def initialize_parameters(self, client_manager):
            """Flower's hook: the saved or first global model."""
            return self._ins_parameters()[1]  # the server's own model: no client is asked

        def configure_fit(self, server_round, parameters, client_manager):
            """Flower's hook: the devices asked to train this round, with the global model."""
            rnd = self.fleet_round(server_round)
            need = int(fleet_cfg.min_devices)
            devices = f"{need} device{'' if need == 1 else 's'}"
            if client_manager.num_available() < need:  # said at once, then every WAIT_LOG_S
                log.info("fleet round %d: waiting for %s (fleet.min_devices); %d connected",
                         rnd, devices, client_manager.num_available())
            while not client_manager.wait_for(need, timeout=WAIT_LOG_S):
                # Flower itself waits up to a day without a word
                log.info("fleet round %d: waiting for %s (fleet.min_devices); %d connected",
                         rnd, devices, client_manager.num_available())
            admitted = self._admitted(list(client_manager.all().values()), rnd)
            said_s = time.monotonic()
            while len(admitted) < need:  # connected, but not all hold the fleet's token
                if time.monotonic() - said_s >= WAIT_LOG_S:
                    said_s = time.monotonic()
                    log.info("fleet round %d: waiting for %s holding the fleet's token; "
                             "%d connected, %d refused", rnd, devices,
                             client_manager.num_available(), len(self.refused))
                time.sleep(HELLO_POLL_S)
                admitted = self._admitted(list(client_manager.all().values()), rnd)
            want = max(need, int(round(len(admitted) * fleet_cfg.fraction_fit)))
            clients = client_manager.sample(num_clients=want, min_num_clients=need,
                                            criterion=Admitted({c.cid for c in admitted}))
            keys, params, nbytes, model_bytes = self._ins_parameters()
            config = self._config(rnd, keys)
            self.changed, self.averaged, self.averaged_cids = False, [], set()
            self.asked, self.asked_s = {c.cid for c in clients}, time.monotonic()
            self.started_mono_s = time.monotonic()  # the round's length: a clock set is no time
            self.record = {"round": rnd, "started_s": round(time.time(), 3), "sampled": len(clients),
                           "bytes_down": nbytes * len(clients), "bytes_up": 0, "devices": {}}
            log.info("fleet round %d: sent the global model (%d classes, %.1f MB) to %d device%s",
                     rnd, len(self.names), model_bytes / 1e6, len(clients),
                     "" if len(clients) == 1 else "s")
            return [(c, FitIns(params, self._for_connection(config, str(c.cid))))
                    for c in clients]

        def _admitted(self, clients: list, rnd: int) -> list:
            """The connections that hold the fleet's token, asking each new one once.

            A connection is asked to sign a fresh nonce (``get_properties``; all new ones at
            once, each within :data:`HELLO_TIMEOUT_S`); one whose signature verifies is
            admitted for its life, one that signs wrongly or not at all is refused for its
            life (one warning naming it and why), one that does not answer is asked again next
            time. Connections that closed are forgotten.

            Args:
                clients: Flower client proxies (``cid``, ``get_properties``).
                rnd: the fleet round (signed with the nonce).

            Returns:
                The admitted proxies, in the order given (all of them without a token).
            """
            if not self.token:
                self._name_new_connections(clients, rnd)
                return list(clients)
            live = {str(c.cid) for c in clients}
            self.verified &= live
            self.refused = {cid: why for cid, why in self.refused.items() if cid in live}
            new = [c for c in clients if str(c.cid) not in self.verified
                   and str(c.cid) not in self.refused]
            for client, why in zip(new, self._hellos(new, rnd)):
                cid = str(client.cid)
                if why is None:
                    self.verified.add(cid)
                elif why:
                    self.refused[cid] = why
                    log.warning("fleet: connection %s (%s) refused: %s; it gets no model",
                                cid[:100], self.device_names.get(cid, "unnamed"), why)
            self._warn_shared_names(self.verified, {str(c.cid) for c in new})
            return [c for c in clients if str(c.cid) in self.verified]

        def _hellos(self, clients: list, rnd: int) -> list[str | None]:
            """:meth:`_hello` to each connection, all at once (each within
            :data:`HELLO_TIMEOUT_S`), in their order."""
            if not clients:
                return []
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(16, len(clients))) as pool:
                return list(pool.map(lambda c: self._hello(c, rnd), clients))

        def _name_new_connections(self, clients: list, rnd: int) -> None:
            """Without a fleet token, still ask each new connection its device's name once (the
            same ``get_properties`` hello, its signature unchecked), so that a device that drops
            out of its first round is named, and two devices sharing a name are said at once.
            """
            new = [c for c in clients if str(c.cid) not in self.named]
            if not new:
                return
            self._hellos(new, rnd)  # each answer's name is remembered; no token to check
            self.named |= {str(c.cid) for c in new}
            live = {str(c.cid) for c in clients}
            self.named &= live
            self._warn_shared_names(live, {str(c.cid) for c in new})

        def _warn_shared_names(self, live: set[str], new: set[str]) -> None:
            """Say at once when a new connection shares its device's name with another live
            one (with a token: among the connections that proved they hold it)."""
            by_name: dict[str, list[str]] = {}
            for cid in sorted(live):
                if cid in self.device_names:
                    by_name.setdefault(self.device_names[cid], []).append(cid)
            for name, cids in by_name.items():
                if len(cids) > 1 and new & set(cids):
                    log.warning("fleet: %d connected devices are named %s: give each device "
                                "its own fleet.device_name (a round uses one reply per name)",
                                len(cids), _short(name))

        def _hello(self, client, rnd: int) -> str | None:
            """Ask one connection to prove it holds the token.

            Returns:
                ``None`` when it does, why not when it does not, ``""`` when it did not
                answer (asked again later).
            """
            nonce = wire.new_nonce()
            ins = GetPropertiesIns({"round": rnd, "nonce": nonce, "hello": True,
                                    "server_auth": wire.server_signature(self.token, nonce, rnd)})
            try:
                res = client.get_properties(ins, timeout=HELLO_TIMEOUT_S, group_id=rnd)
            except Exception as exc:  # noqa: BLE001 - a connection's fault is that connection's
                log.info("fleet: connection %s did not answer %s (%s: %s)%s", str(client.cid)[:100],
                         "the token check" if self.token else "when asked its name",
                         type(exc).__name__, exc, "; asked again next round" if self.token else "")
                return ""
            props = dict(getattr(res, "properties", None) or {})
            device = wire.device_label(props.get("device", ""))
            if device:
                self._remember(client, device)
            if not wire.verify(self.token, nonce, rnd, device, str(props.get("auth", ""))):
                return UNAUTHENTICATED
            return None

        def _authentic(self, rnd: int, metrics: dict) -> bool:
            return wire.verify(self.token, self.nonces.get(rnd, ""), rnd,
                               str(metrics.get("device", "")), str(metrics.get("auth", "")))

        def _refuse_reply(self, rnd: int, device: str, exc: Exception, what: str) -> str:
            """Log (one warning naming the device and why) and count a refused reply.

            Args:
                rnd: the fleet round.
                device: the device's name (or its connection id).
                exc: why: a :class:`RefusedReply`, or any other fault the reply caused
                    (logged with its traceback).
                what: ``update`` or ``adoption report``.

            Returns:
                The reason, for the round's record.
            """
            self.faults += 1
            self.record["malformed"] = self.record.get("malformed", 0) + 1
            why = (str(exc) if isinstance(exc, RefusedReply)
                   else f"malformed reply ({type(exc).__name__}: {exc})")[:300]
            log.warning("fleet round %d: %s from %s refused: %s", rnd, what, device, why,
                        exc_info=not isinstance(exc, RefusedReply))
            return why

        def _parse_update(self, device: str, m: dict, res) -> tuple[Update, dict]:
            """One device's fit reply as an :class:`Update` and its entry in the round's record.

            Raises:
                RefusedReply: the reply breaks a wire rule (names, keys, arrays, sample count,
                    reported scores; see the check functions of this module).
            """
            names = check_names(_json_field(m, "names", []))
            keys = _strings(_json_field(m, "keys", []), "tensor keys")
            samples = res.num_examples
            if isinstance(samples, bool) or not isinstance(samples, Integral) or samples <= 0:
                raise RefusedReply(f"num_examples {_short(samples)} is not a positive whole number")
            if samples > MAX_SAMPLES:  # FedAvg weighs by it: one claim would outweigh the fleet
                raise RefusedReply(f"num_examples {samples} is more than a replay memory holds "
                                   f"({MAX_SAMPLES}, memory.capacity's limit)")
            steps = m.get("steps", 0)
            if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 0:
                raise RefusedReply(f"steps {_short(steps)} is not a whole number >= 0")
            forgetting = check_scores(_json_field(m, "forgetting", {}), "forgetting")
            per_class_ap = check_scores(_json_field(m, "per_class_ap", {}), "per_class_ap")
            arrays = check_arrays(keys, parameters_to_ndarrays(res.parameters), names)
            check_architecture(arrays, self.arrays, self.arch)
            raw_held = _json_field(m, "held", None)  # absent: a device of an older release
            held = None if raw_held is None else frozenset(
                n for n in _strings(raw_held, "held classes") if n in names)
            entry = {"samples": int(samples), "steps": int(steps), "per_class_ap": per_class_ap,
                     "forgetting": forgetting}
            return Update(device, arrays, names, int(samples), forgetting, per_class_ap,
                          held), entry

        def aggregate_fit(self, server_round, results, failures):
            """Flower's hook: gate the updates on forgetting, average them by class name, save
            the new global model."""
            rnd = self.fleet_round(server_round)
            rec = self.record
            rec.setdefault("devices", {})
            self.notices, self.cid_notices = {}, {}
            updates, sent_by = [], {}  # device name -> the connection whose reply is used
            spellings = list(self.names)
            for proxy, res in results:
                device = str(getattr(proxy, "cid", "") or "?")
                try:
                    m = dict(res.metrics or {})
                    device = wire.device_label(m.get("device") or device)
                    self._remember(proxy, device)
                    if device in rec["devices"]:
                        # two devices with one name (a default host name, a copied config):
                        # the second would overwrite the first's record and be averaged twice
                        rec.setdefault("duplicate_names", []).append(device[:200])
                        if "samples" in rec["devices"][device]:  # the first sent an update
                            log.warning("fleet round %d: a second reply named %s refused "
                                        "(connection %s; the first came from %s): give each "
                                        "device its own fleet.device_name", rnd, _short(device),
                                        _short(str(getattr(proxy, "cid", "?"))),
                                        _short(sent_by[device]))
                            said = (f"fleet round {rnd}: two devices sent an update as "
                                    f"{device[:100]}; the server kept ")
                            advice = ": give each device its own fleet.device_name"
                            # each is told which one it is (before: both heard the same line,
                            # and the refused one counted its samples as learnt on adoption)
                            self.cid_notices[str(getattr(proxy, "cid", ""))] = (
                                f"{said}the other's update and refused this device's (its "
                                f"samples are not learnt by the fleet: each round keeps one "
                                f"update per name, and the same one may win every round)"
                                f"{advice}")
                            self.cid_notices[sent_by[device]] = (
                                f"{said}this device's update and refused the other's{advice}")
                            continue
                        log.warning("fleet round %d: two replies named %s (the first sent no "
                                    "update; the second is used): give each device its own "
                                    "fleet.device_name", rnd, _short(device))
                    nbytes = sum(len(t) for t in res.parameters.tensors)
                    rec["bytes_up"] = rec.get("bytes_up", 0) + nbytes
                    if not self._authentic(rnd, m):
                        rec["devices"][device] = {"update": "refused", "why": "unauthenticated"}
                        log.warning("fleet round %d: update from %s refused: %s", rnd, device,
                                    UNAUTHENTICATED)
                        continue
                    if m.get("skipped"):
                        rec["devices"][device] = {"update": "skipped", "why": str(m["skipped"])}
                        log.info("fleet round %d: %s skipped the round: %s", rnd, device,
                                 m["skipped"])
                        continue
                    update, entry = self._parse_update(device, m, res)
                except Exception as exc:  # a malformed reply is contained: refused, logged, counted
                    why = self._refuse_reply(rnd, device, exc, "update")
                    rec["devices"][device] = {"update": "refused", "why": why}
                    self.notices[device[:100]] = (f"fleet round {rnd}: the server refused this "
                                                  f"device's update: {why}")
                    continue
                updates.append(update)
                rec["devices"][device] = entry
                sent_by[device] = str(getattr(proxy, "cid", ""))
            # a class new to the fleet takes the spelling of the first device by name, not by
            # the order replies came in (before, 'person' in one run, 'Person' in the next)
            for update in sorted(updates, key=lambda u: u.device):
                written = update.names
                update.names = fleet_spelling(update.names, spellings)  # 'Car' is the class 'car'
                if update.held is not None:  # the held names, spelt as the fleet spells them
                    update.held = frozenset(n for w, n in zip(written, update.names)
                                            if w in update.held)
            for device, why in self._dropped_out(results, failures):
                log.warning("fleet round %d: %s dropped out of the round (%s)", rnd, device, why)
                rec.setdefault("failures", []).append(why[:200])
                if device in self.device_names.values():
                    rec["devices"].setdefault(device, {"update": "dropped out", "why": why[:200]})
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
            _note_dominant(rnd, rec, {d.device: agg.weights[d.device]
                                      for d in agg.decisions if not d.dropped})
            for key, devices in agg.skipped_keys.items():
                log.warning("fleet round %d: tensor %s of %s left out (shape differs)", rnd, key, devices)
            if all(d.dropped for d in agg.decisions):
                log.warning("fleet round %d: every update was dropped; the global model stays", rnd)
                return None, {}
            bad = non_finite_key(agg.arrays)
            if bad is not None:  # never stored: every device would adopt it
                log.warning("fleet round %d: the average has non-finite weights (tensor %s); the "
                            "global model stays as it was", rnd, bad)
                rec["global"] = f"kept: the average had non-finite weights (tensor {bad})"
                return None, {}
            new = [n for n in agg.names if n not in self.names]
            if new:
                taught = {n: agg.contributors[n] for n in new if agg.contributors[n]}
                named = [n for n in new if not agg.contributors[n]]
                log.info("fleet round %d: classes new to the fleet: %s (%s)", rnd, new, "; ".join(
                    part for part in (f"taught by {taught}" if taught else "",
                                      f"named by a device that holds no sample of {named} yet"
                                      if named else "") if part))
                _note_close_names(rnd, new, list(self.names), agg.contributors)
            try:
                store.save(rnd, agg.arrays, agg.names, self.arch)
                self.saved_round = rnd
            except OSError as exc:  # a full disk: the round's model is not kept, the server is
                log.error("fleet round %d: the new global model cannot be saved in %s (%s); the "
                          "global model stays as it was", rnd, store.root, exc.strerror or exc)
                rec["global"] = f"kept: the new model could not be saved ({exc.strerror or exc})"
                return None, {}
            self.arrays, self.names = agg.arrays, agg.names
            self.changed = True
            self.averaged = sorted(d.device for d in agg.decisions if not d.dropped)
            self.averaged_cids = {sent_by[d] for d in self.averaged}
            rec["names"] = list(self.names)
            # recorded now as well: a server killed before the adoptions end keeps the round's
            # record (its complete form replaces this one)
            self._append_record({**rec, "partial": "the adoptions were not recorded yet"})
            keys, arrays = wire.to_wire(self.arrays, fleet_cfg.wire_dtype)
            return ndarrays_to_parameters(arrays), {"devices": len(updates)}

        def configure_evaluate(self, server_round, parameters, client_manager):
            """Flower's hook: the devices asked to gate and adopt the new global model."""
            rnd = self.fleet_round(server_round)
            if not self.changed or client_manager.num_available() == 0:
                self._finish_round()
                return []
            clients = self._admitted(list(client_manager.all().values()), rnd)
            if not clients:
                self._finish_round()
                return []
            self.asked, self.asked_s = {c.cid for c in clients}, time.monotonic()
            keys, params, nbytes, _ = self._ins_parameters()
            self.record["bytes_down"] = self.record.get("bytes_down", 0) + nbytes * len(clients)
            config = self._config(rnd, keys)  # one nonce for the round
            # the devices whose update is in the model: each counts the samples it trained on
            # as learnt once it adopts the model (the others learnt nothing of theirs from it)
            config["averaged"] = wire.dumps(self.averaged)
            return [(c, EvaluateIns(params, self._for_connection(config, str(c.cid))))
                    for c in clients]

        def aggregate_evaluate(self, server_round, results, failures):
            """Flower's hook: record which devices adopted the new global model."""
            rnd = self.fleet_round(server_round)
            rec = self.record
            adopted = {}
            for proxy, res in results:
                device = str(getattr(proxy, "cid", "") or "?")
                try:
                    m = dict(res.metrics or {})
                    device = wire.device_label(m.get("device") or device)
                    self._remember(proxy, device)
                    if not self._authentic(rnd, m):
                        log.warning("fleet round %d: adoption report from %s refused: %s", rnd,
                                    device, UNAUTHENTICATED)
                        continue
                    status = m.get("status", "")
                    if not isinstance(status, str):
                        raise RefusedReply(f"status {_short(status)} is not a string")
                    test_ap = _json_field(m, "test_ap", None)
                    entry = {"status": status, "reason": str(m.get("reason", ""))[:300],
                             "version": str(m.get("version", ""))[:100],
                             "per_class_ap": check_scores(_json_field(m, "per_class_ap", {}),
                                                          "per_class_ap"),
                             "test_ap": (None if test_ap is None
                                         else check_scores(test_ap, "test_ap"))}
                except Exception as exc:  # a malformed report is contained: refused, logged, counted
                    why = self._refuse_reply(rnd, device, exc, "adoption report")
                    adopted[_own_key(adopted, device)] = {"status": "refused", "reason": why}
                    continue
                # two devices of one name (said at connection) each adopt or not: both kept,
                # and logged by the key the round's record gives them ('drone1 (2)')
                key = _own_key(adopted, device)
                adopted[key] = entry
                log.info("fleet round %d: %s %s the global model (%s)", rnd, key,
                         entry["status"], entry["reason"])
            for device, why in self._dropped_out(results, failures):
                late = why.startswith("no reply within")
                if late:  # its adoption (an export, an INT8 build) may have finished after
                    why += ("; it may have adopted the model after that (a longer "
                            "fleet.round_timeout_s waits for its report)")
                log.warning("fleet round %d: %s %s adoption (%s)", rnd, device,
                            "sent no report of its" if late else "dropped out of", why)
                if device in self.device_names.values():
                    adopted.setdefault(device, {"status": "no report" if late else "dropped out",
                                                "reason": why[:200]})
            rec["adoption"] = adopted
            self._finish_round()
            return None, {}

        def _append_record(self, record: dict) -> None:
            """Append a round's record to the round log; a full disk is logged, and the
            fleet goes on (the global model is what must survive, and it was saved)."""
            try:
                store.append_round(record)
            except OSError as exc:
                log.error("fleet round %s: its record cannot be written to %s (%s)",
                          record.get("round"), store.root, exc.strerror or exc)

        def _remember(self, proxy, device: str) -> None:
            """Note the name a connection's device gave (for the lines of a later drop-out)."""
            cid = getattr(proxy, "cid", None)
            if cid is not None:
                self.device_names[str(cid)] = device[:100]

        def _dropped_out(self, results, failures) -> list[tuple[str, str]]:
            """Who dropped out of the current request and why, one pair per failure.

            Flower reports a device that disconnected or timed out as a bare exception
            (``GrpcBridgeClosed``, no message, no device): the device is the one asked that
            neither replied nor failed with a reply, named when that is unambiguous.

            Returns:
                ``(device, why)`` pairs: the device's name (or "a device"), and why in words.
            """
            answered = {str(getattr(p, "cid", "")) for p, _ in results}
            answered |= {str(getattr(f[0], "cid", "")) for f in failures if isinstance(f, tuple)}
            silent = sorted(self.asked - answered)
            errors = [f for f in failures if isinstance(f, BaseException)]
            names = ([self.device_names.get(cid, "a device") for cid in silent]
                     if len(silent) == len(errors) else ["a device"] * len(errors))
            waited_s = time.monotonic() - self.asked_s
            out = [(name, failure_reason(exc, waited_s, fleet_cfg.round_timeout_s))
                   for name, exc in zip(names, errors)]
            for proxy, res in (f for f in failures if isinstance(f, tuple)):
                message = getattr(getattr(res, "status", None), "message", "") or "no message"
                out.append((self.device_names.get(str(getattr(proxy, "cid", "")), "a device"),
                            f"it replied with an error: {_short(message, 200)}"))
            return out

        def _finish_round(self):
            rec = self.record
            if not rec:
                return
            rec["bytes"] = rec.get("bytes_down", 0) + rec.get("bytes_up", 0)
            rec["seconds"] = round(time.monotonic() - self.started_mono_s, 1)
            self._append_record(rec)
            if on_round is not None:
                on_round(rec)
            self.record = {}

        def evaluate(self, server_round, parameters):
            """Flower's hook: none (the server holds no data)."""
            return None  # no server-side data: devices evaluate on their own held-out slices

    return FleetStrategy()
