"""The text rules of a class name, wherever names come from (label files, dataset yamls,
operator answers, checkpoints, the CLI): what a name may hold, when two spellings are one class.

The class registry (:mod:`edgecl.models.classes`) stores names through :func:`clean_name`;
imports and answers match names with :func:`known_spelling` and :func:`same_name_key`; a
dataset's own names must give each class its own name (:func:`name_clash`); a new name one
typing slip away from a known one is pointed out (:func:`close_class_names`).
"""

from __future__ import annotations

import difflib
import re
import reprlib
import unicodedata
from collections.abc import Iterable, Mapping

from edgecl.errors import LabelError

MAX_NAME_CHARS = 100
"""Longest class name, in characters."""

INVISIBLE_CATEGORIES = frozenset({"Cf", "Zl", "Zp", "Co"})
"""Unicode categories a new class name may not use: format characters (zero-width space, joiner,
BOM, bidi overrides such as U+202E), line and paragraph separators, private use. ``car\u200b``
would look like ``car`` in every list and be another class; ``\u202eevil`` is shown reversed."""
BLANK_RANGES = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
                (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
                (0x2060, 0x206F), (0x2800, 0x2800), (0x3164, 0x3164), (0xFE00, 0xFE0F),
                (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
                (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
"""Code points drawn as nothing whatever their category: Unicode's Default_Ignorable_Code_Point
set (combining grapheme joiner, variation selectors, Hangul fillers, ...) plus the blank Braille
pattern U+2800; refused in new class names like :data:`INVISIBLE_CATEGORIES`."""


def _invisible(ch: str) -> bool:
    """Whether a character is drawn as nothing or changes the text's direction."""
    code = ord(ch)
    return (unicodedata.category(ch) in INVISIBLE_CATEGORIES
            or any(lo <= code <= hi for lo, hi in BLANK_RANGES))


def clean_name(name: object, strict: bool = True) -> str:
    """Return a class name stripped of surrounding white space (and, strict, in Unicode NFC
    form: ``e`` + combining accent and ``é`` are one name), or raise.

    Args:
        name: the name as given (label file, operator answer, CLI, checkpoint).
        strict: also refuse the characters of :data:`INVISIBLE_CATEGORIES` and
            :data:`BLANK_RANGES` (every new name; names a registry already holds are read with
            ``strict=False``).

    Returns:
        The name to store.

    Raises:
        LabelError: not a string, empty, longer than :data:`MAX_NAME_CHARS`, or containing
            control characters (a newline would break every text format the names go to),
            lone surrogates (no UTF-8 file can hold them) or, strict, invisible characters
            or code points Unicode does not assign (a browser of a newer Unicode may call one
            invisible: the Label page refuses those, and so does the device), or made only
            of combining marks (a lone U+0301 is drawn as nothing).
    """
    if not isinstance(name, str):
        raise LabelError(f"class name must be text, got {type(name).__name__} "
                         f"{reprlib.repr(name)}")
    text = name.strip()
    if strict and not any(unicodedata.category(ch) == "Cs" for ch in text):
        text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise LabelError("class name is empty")
    if len(text) > MAX_NAME_CHARS:  # first: a message quoting a 2 MB name would be 2 MB long
        raise LabelError(f"class name {text[:20]!r}... is longer than {MAX_NAME_CHARS} characters")
    if strict and any(_invisible(ch) for ch in text):
        bad = next(ch for ch in text if _invisible(ch))
        raise LabelError(f"class name {text!r} contains an invisible or direction-changing "
                         f"character (U+{ord(bad):04X})")
    if strict and any(unicodedata.category(ch) == "Cn" for ch in text):
        bad = next(ch for ch in text if unicodedata.category(ch) == "Cn")
        raise LabelError(f"class name {text!r} contains a character Unicode does not assign "
                         f"(U+{ord(bad):04X}; Unicode {unicodedata.unidata_version} here)")
    if strict and all(unicodedata.category(ch)[0] in "MZ" for ch in text):
        codes = " ".join(f"U+{ord(ch):04X}" for ch in text[:5])
        raise LabelError(f"class name {codes} holds no character of its own to show (only "
                         f"combining marks or spaces)")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise LabelError(f"class name {text!r} contains control characters")
    if any(unicodedata.category(ch) == "Cs" for ch in text):
        raise LabelError(f"class name {text!r} is not valid Unicode text (a lone surrogate)")
    return text


IGNORE_NAMES = frozenset({"dontcare", "ignore", "ignored", "ignoreregion", "ignoreregions",
                          "ignoredregion", "ignoredregions"})
"""Class names (lower case, letters and digits only) that mark regions to ignore."""


def is_ignore_name(name: str) -> bool:
    """Whether a class name marks an ignore region (``DontCare``, ``ignore``, ...): imports drop
    such boxes, and no answer or rename makes such a name a new class.

    Args:
        name: the class name.

    Returns:
        True for the names of :data:`IGNORE_NAMES`, in any case and spelling of separators.
    """
    return loose_class_name(name) in IGNORE_NAMES


def refuse_ignore_name(name: str, where: str = "") -> None:
    """Refuse an ignore-region name (:func:`is_ignore_name`) as a new class.

    Args:
        name: the new class's name.
        where: what to put before the message (e.g. ``"box 2: "``).

    Raises:
        LabelError: ``name`` marks an ignore region (before, an answer naming ``DontCare``
            made it a class that the device's own ``memory export`` then lost on import).
    """
    if is_ignore_name(name):
        raise LabelError(f"{where}{name!r} marks a region to ignore in the label formats edgecl "
                         f"imports (VOC, COCO, KITTI), not a class: imports drop such boxes; "
                         f"leave the region unlabelled, or name the object it shows")


def known_spelling(name: str, known: Iterable[str]) -> str | None:
    """The spelling under which a class name is already known, if it is.

    The name itself when known; else the one known name that differs from it only in case
    ("WHEEL" from an import or an answer is the class "wheel"); else ``None``.

    Args:
        name: a cleaned class name (:func:`clean_name`).
        known: the known names.

    Returns:
        The known spelling, or ``None`` for a new name.
    """
    known = list(known)
    if name in known:
        return name
    folded = name.casefold()
    return next((k for k in known if k.casefold() == folded), None)


def same_name_key(name: object) -> str:
    """What two spellings of one class name share: the name without surrounding white space,
    in Unicode NFC form and case-folded (``' Car'``, ``'car'`` and ``'CAR'`` are one class, as the
    registry stores a name through :func:`clean_name`).

    Args:
        name: a class name (anything else is compared as its text).

    Returns:
        The comparison key.
    """
    text = str(name).strip()
    if not any(unicodedata.category(ch) == "Cs" for ch in text):
        text = unicodedata.normalize("NFC", text).strip()
    return text.casefold()


def former_names_in(used: Iterable[str], names: Mapping[int, str],
                    former: Mapping[int, list[str]]) -> dict[str, str]:
    """The names of ``used`` that a class had before a ``classes rename``: the rename freed
    them, so a label naming one makes a new class (as a model made before the rename still
    names the class so, the registry keeps them as former names).

    Args:
        used: class names a label or an import gives.
        names: the registry's class id -> name now.
        former: class id -> the names renames took from it.

    Returns:
        Each such name -> the class's name now (a class renamed only in case, ``Car`` ->
        ``car``, is the name itself: no former name).
    """
    by_key = {same_name_key(old): cid for cid, olds in former.items() for old in olds}
    out = {}
    for name in dict.fromkeys(used):
        cid = by_key.get(same_name_key(name))
        if cid in names and same_name_key(names[cid]) != same_name_key(name):
            out[name] = names[cid]
    return out


def loose_class_name(name: str) -> str:
    """A class name without case and separators, letters and digits of any script kept: two
    names that give the same non-empty text are one class (``Car`` and ``car``,
    ``OtherVehicle`` and ``other_vehicle``; ``行人`` and ``汽车`` stay two).

    Args:
        name: the class name.

    Returns:
        The registry's comparison key (:func:`same_name_key`: NFC,
        casefolded) without whitespace, punctuation and underscores ('' when nothing else is
        left: such a name matches no other).
    """
    return re.sub(r"[\W_]+", "", same_name_key(name))


def name_clash(names: Mapping[int, str]) -> str | None:
    """Why a dataset's class names do not give each class its own name, if they do not: one
    name under two ids, or two names that an import takes for one class (ultralytics accepts
    both, but an import maps the two ids onto one class, and a dataset written from it lacks
    an id).

    Args:
        names: class id (an int; a COCO category's may be a string) -> name (stripped), as
            the dataset's file gives them; two names are
            one class when :func:`loose_class_name` gives both the same non-empty key (a name
            of no letters or digits, ``++``, clashes only with itself).

    Returns:
        ``"class name 'Car' is given to ids 0 and 1; each class needs its own name"`` (or, for
        ``Car`` and ``car``, ``"class names 'Car' (id 0) and 'car' (id 2) differ only in case
        or separators, ..."``) for the first such pair in id order; ``None`` when every class
        has its own name.
    """
    first: dict[str, int] = {}
    for cid, name in sorted(names.items(), key=lambda kv: (isinstance(kv[0], str), kv[0])):
        other = first.setdefault(loose_class_name(name) or name, cid)
        if other == cid:
            continue
        if names[other] == name:
            return f"class name '{name}' is given to ids {other} and {cid}; each class needs its own name"
        how = ("in their Unicode form (a composed and a decomposed accent: the same text to the "
               "eye)" if unicodedata.normalize("NFC", names[other]) == unicodedata.normalize(
                   "NFC", name) else "in case or separators")
        return (f"class names '{names[other]}' (id {other}) and '{name}' (id {cid}) differ only "
                f"{how}, so an import takes them for one class; each class needs its own name")
    return None


CLOSE_NAME_RATIO = 0.81
"""How alike (difflib's ratio of the :func:`loose_class_name` forms, 0..1) a new class name must
be to a known one to be pointed out as a possible typo (``Persn`` and ``Person``: 0.91, ``cars``
and ``car``: 0.86; ``tricycle`` and ``bicycle``: 0.80 and ``car`` and ``cat``: 0.67, not pointed
out; names that differ only in their digits, ``class_0`` and ``class_3``, never are)."""


LOOK_ALIKE_LETTERS = str.maketrans({
    **dict(zip("аеорсухѕіјԁԛԝһӏвкмнт", "aeopcyxsijdqwhlbkmht")),      # Cyrillic
    **dict(zip("αβεζηικμνορτυχ", "abezhikmnoptyx"))})                   # Greek
"""Cyrillic and Greek letters (case-folded) that look like a Latin one, after Unicode TR39's
confusables: ``сar`` typed on a Russian layout, ``ΒUS`` pasted from a Greek document."""


IRREGULAR_PLURALS = {"people": "person", "persons": "person", "men": "man", "women": "woman",
                     "children": "child", "mice": "mouse", "geese": "goose", "oxen": "ox",
                     "sheep": "sheep", "deer": "deer", "fish": "fish", "aircraft": "aircraft"}
"""English plurals no suffix rule gives (``people`` for ``person``), by their singular."""


def singular_key(key: str) -> str:
    """The singular of a :func:`loose_class_name` key, by English rules: ``people`` ->
    ``person``, ``buses`` -> ``bus``, ``boxes`` -> ``box``, ``ladies`` -> ``lady``, ``cars`` ->
    ``car``; the last word of a joined name only (``trafficlights`` -> ``trafficlight``). Keys
    of other scripts, and words ending in ``ss``/``us``/``is``, stay as they are.

    Args:
        key: a comparison key (lower case, no separators).

    Returns:
        The singular key.
    """
    for plural, singular in IRREGULAR_PLURALS.items():
        if key.endswith(plural):
            return key[:len(key) - len(plural)] + singular
    if len(key) > 4 and key.endswith("ies"):
        return key[:-3] + "y"
    if len(key) > 4 and re.search(r"(s|x|z|ch|sh)es$", key):
        return key[:-2]
    if len(key) > 3 and key.endswith("s") and not re.search(r"(ss|us|is)$", key):
        return key[:-1]
    return key


def look_alike_key(name: str) -> str:
    """What two names that look the same on screen share: :func:`loose_class_name` after
    Unicode NFKC (full-width ``ｃａｒ`` is ``car``, ``ﬁsh`` is ``fish``) and with the Latin
    look-alikes of :data:`LOOK_ALIKE_LETTERS` replaced.

    Args:
        name: the class name.

    Returns:
        The comparison key ('' when no letter or digit is left).
    """
    return loose_class_name(unicodedata.normalize("NFKC", name)).translate(LOOK_ALIKE_LETTERS)


def close_class_names(new_names: Iterable[str], known: Iterable[str]) -> dict[str, str]:
    """The known class name each new name may be a typo or a look-alike of, where one is close.

    A hint only: the new class exists either way, and ``edgecl classes merge NEW KNOWN`` undoes
    a typo. A name that looks like a known one (:func:`look_alike_key`: a Cyrillic ``с`` for
    a Latin ``c``, full-width letters), or is its plural or singular (:func:`singular_key`:
    ``people`` and ``Person``), is pointed out whatever its length.

    Args:
        new_names: class names that were just added.
        known: the names known before them.

    Returns:
        new name -> the closest known name with a ratio of at least :data:`CLOSE_NAME_RATIO`
        (new names with none are left out).
    """
    loose, look_alike, singular = {}, {}, {}
    for name in known:
        loose.setdefault(loose_class_name(name), name)
        look_alike.setdefault(look_alike_key(name), name)
        singular.setdefault(singular_key(loose_class_name(name)), name)
    for found in (loose, look_alike, singular):
        found.pop("", None)
    out = {}
    for name in new_names:
        key = loose_class_name(name)
        if key not in loose and look_alike_key(name) in look_alike:
            out[name] = look_alike[look_alike_key(name)]
            continue
        if key not in loose and singular_key(key) in singular:  # people and Person, buses and bus
            out[name] = singular[singular_key(key)]
            continue
        if len(key) < 3 and key not in loose:  # two letters are one slip from too many names
            continue
        if key in loose:  # the same name but for case and separators: traffic light
            out[name] = loose[key]
            continue
        digitless = re.sub(r"\d", "", key)  # class_0 and class_3, cam1 and cam2: numbered apart
        match = difflib.get_close_matches(
            key, [k for k in loose if re.sub(r"\d", "", k) != digitless], n=1,
            cutoff=CLOSE_NAME_RATIO)
        if match:
            out[name] = loose[match[0]]
    return out


def standing_names(names: Mapping[int, str], label_ids: Mapping[str, int]) -> list[str]:
    """The class names that stand for themselves: a class merged into another is left out (a
    new name close to it is close to the class it was merged into, which is listed).

    Args:
        names: class id -> name (every class of the registry, merged ones too).
        label_ids: name -> the id a label with that name gets (a merged class's name: the id
            of the class it was merged into).

    Returns:
        The names, by id.
    """
    return [name for cid, name in sorted(names.items()) if label_ids.get(name, cid) == cid]


def placeholder_id(name: str) -> int | None:
    """The id ``k`` of a ``class_<k>`` name, the name a class of a dataset that names no class
    gets (``class_3`` -> 3), else None."""
    if not isinstance(name, str) or not name.startswith("class_"):
        return None
    number = name.removeprefix("class_")
    return int(number) if number.isdigit() and number.isascii() else None


def unnamed_class_target(dataset_id: int, names: Mapping[int, str]) -> int | None:
    """The device's class that class id ``dataset_id`` of a dataset naming no class means.

    The class named ``class_<dataset_id>`` wherever its id (a sparse dataset's ids were given
    in the order they appeared: ``class_20`` may be id 1); else the class of that id, unless
    its name is another id's ``class_<k>``; before, a later import or a ``dir://`` stream read
    the dataset's id 1 as that ``class_20``.

    Args:
        dataset_id: the id in the dataset's label files.
        names: the device's class id -> name.

    Returns:
        The device's class id, or None when the device has no class of that meaning.
    """
    own = f"class_{int(dataset_id)}"
    for class_id, name in names.items():
        if name == own:
            return int(class_id)
    name = names.get(int(dataset_id))
    if name is None:
        return None
    other = placeholder_id(name)
    return None if other is not None and other != int(dataset_id) else int(dataset_id)
