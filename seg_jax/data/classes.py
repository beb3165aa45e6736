"""Class tables: what the values in a data set's label PNGs mean.

A table lists the evaluated classes in train-id order, each with its name, the label value(s)
that mark it in the PNGs and its colour, and the values that are void (neither trained on nor
scored). Everything that depends on the classes (``config.model.num_classes``, the reports,
palettes and figures, the pipeline's value -> train id mapping, the label checks) follows the
table ``config.data.classes`` names: a built-in one or a JSON / CSV file.

* ``'cityscapes'``: from cityscapesscripts (``seg_jax.data.labels``): label ids 0..33, 19 train
  ids, the rest of the ids void; it marks the course's five classes.
* ``'voc'``: Pascal VOC 2012, values 0..20 are train ids 0..20, 255 (object borders) is void.
* ``'ade20k'``: value 0 ('other') is void and values 1..150 are train ids 0..149. That is
  mmsegmentation's ``reduce_zero_label``, written into the table rather than kept as a flag, so
  it cannot be set wrong for one split and right for another.

A value a table does not list (neither a class's nor void) is an error where a label holds it,
never silently void: it is how a wrong table or a wrong ``reduce_zero_label`` shows itself.

A JSON file (``classes`` in train-id order; ``color`` optional, ``marked`` optional)::

    {"name": "cracks", "void": [255],
     "classes": [{"name": "background", "train_id": 0, "values": [0], "color": [0, 0, 0]},
                 {"name": "crack", "train_id": 1, "values": [1, 2]}],
     "marked": ["crack"]}

A CSV file, one row per class and one per void value (``train_id`` ``void``)::

    name,train_id,values,color
    background,0,0,0 0 0
    crack,1,1 2,
    border,void,255,
"""

import csv
import dataclasses
import functools
import json
import os

import numpy as np

from seg_jax.data import builtin_classes, labels
from seg_jax.errors import ConfigError

IGNORE_LABEL = labels.IGNORE_LABEL
BUILTIN = ('cityscapes', 'voc', 'ade20k')
VOID = 'void'  # a CSV row's train_id for void values


def colour_map(index: int) -> tuple[int, int, int]:
    """The Pascal VOC colour of ``index``: its bits spread over the channels' high bits, which
    gives 256 distinct colours. VOC's own colours, and the generated default of other tables."""
    rgb = [0, 0, 0]
    for bit in range(8):
        for channel in range(3):
            rgb[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return tuple(rgb)


@dataclasses.dataclass(frozen=True)
class ClassTable:
    """A data set's classes (``names``, ``values`` and ``colors`` by train id) and void values.

    ``marked`` are classes the reports single out beside the mean (Cityscapes: the course's
    five); ``origin`` is 'built-in' or the file the table was read from.
    """
    name: str
    names: tuple[str, ...]
    values: tuple[tuple[int, ...], ...]
    colors: tuple[tuple[int, int, int], ...]
    void_values: tuple[int, ...]
    marked: tuple[str, ...] = ()
    origin: str = 'built-in'

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def is_cityscapes(self) -> bool:
        return self.name == 'cityscapes' and self.origin == 'built-in'

    @property
    def marked_title(self) -> str:
        """What the reports call the marked classes."""
        return 'course classes' if self.is_cityscapes else 'marked classes'

    @property
    def marked_ids(self) -> tuple[int, ...]:
        return tuple(self.names.index(name) for name in self.marked)

    @functools.cached_property
    def value_to_train_id(self) -> np.ndarray:
        """Label value -> train id for all 256 uint8 values; void and unknown values -> 255."""
        lookup = np.full(256, IGNORE_LABEL, np.uint8)
        for train_id, class_values in enumerate(self.values):
            lookup[list(class_values)] = train_id
        return lookup

    @functools.cached_property
    def known_values(self) -> np.ndarray:
        """Which of the 256 uint8 values the table lists (a class's or void)."""
        known = np.zeros(256, bool)
        known[[value for class_values in self.values for value in class_values]] = True
        known[list(self.void_values)] = True
        return known

    @functools.cached_property
    def palette(self) -> np.ndarray:
        """(256, 3) uint8 colours indexed by train id; void (255) and unused ids are black."""
        palette = np.zeros((256, 3), np.uint8)
        palette[:self.num_classes] = self.colors
        return palette

    def describe(self) -> str:
        """'the class table <name> (<origin>)', for messages."""
        where = '' if self.origin == 'built-in' else f' of {self.origin}'
        return f'the class table {self.name!r}{where}'


def _cityscapes() -> ClassTable:
    return ClassTable(
        name='cityscapes', names=labels.CLASS_NAMES,
        values=tuple((label.id,) for label in labels.TRAIN_LABELS),
        colors=tuple(tuple(label.color) for label in labels.TRAIN_LABELS),
        void_values=tuple(value for value in range(labels.NUM_LABEL_IDS)
                          if labels.LABEL_ID_TO_TRAIN_ID[value] == IGNORE_LABEL),
        marked=labels.COURSE_CLASSES)


def _voc() -> ClassTable:
    names = builtin_classes.VOC_CLASSES
    return ClassTable(name='voc', names=names, values=tuple((i,) for i in range(len(names))),
                      colors=tuple(colour_map(i) for i in range(len(names))), void_values=(255,))


def _ade20k() -> ClassTable:
    names = builtin_classes.ADE20K_CLASSES
    return ClassTable(name='ade20k', names=names,
                      values=tuple((i + 1,) for i in range(len(names))),
                      colors=tuple(colour_map(i + 1) for i in range(len(names))),
                      void_values=(0,))


_BUILDERS = {'cityscapes': _cityscapes, 'voc': _voc, 'ade20k': _ade20k}


def _int(text, what: str, where: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ConfigError(f'{where}: {what} {text!r} is not an integer.') from None
    return value


def _entry(raw: dict, where: str) -> tuple[str, object, tuple[int, ...], tuple | None]:
    """(name, train_id as written, values, color or None) of one class entry."""
    if not isinstance(raw, dict) or 'name' not in raw or 'values' not in raw:
        raise ConfigError(f'{where}: each class needs "name", "train_id" and "values" '
                          f'(and may give "color"); got {raw!r}.')
    values = raw['values']
    values = values.split() if isinstance(values, str) else values
    values = values if isinstance(values, (list, tuple)) else [values]
    color = raw.get('color')
    if isinstance(color, str):
        color = color.split() if color.strip() else None
    if color is not None:
        color = tuple(_int(c, 'colour channel', where) for c in color)
    return (str(raw['name']).strip(), raw.get('train_id'),
            tuple(_int(v, 'label value', where) for v in values), color)


def _table_from_entries(name: str, entries: list, void: list[int], marked: list[str],
                        origin: str) -> ClassTable:
    """Checks the entries and sorts them by train id; every error names ``origin`` and the fix."""
    where = f'The class table {origin}'
    if not entries:
        raise ConfigError(f'{where} lists no classes; give at least one, each with a name, a '
                          'train id and its label values.')
    if len(entries) > IGNORE_LABEL:
        raise ConfigError(f'{where} lists {len(entries)} classes; at most {IGNORE_LABEL} fit, '
                          f'since train id {IGNORE_LABEL} means void.')
    train_ids = [_int(train_id, 'train id', where) for _, train_id, _, _ in entries]
    if sorted(train_ids) != list(range(len(entries))):
        raise ConfigError(
            f'{where} has train ids {sorted(train_ids)}; they must be 0..{len(entries) - 1}, '
            'each once (train ids index the network\'s outputs). Renumber the classes from 0.')
    by_id = sorted(zip(train_ids, entries))
    names = tuple(entry[0] for _, entry in by_id)
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError(f'{where}: class names must be distinct and non-empty; got {names}.')
    owners: dict[int, str] = {}
    for value, owner in ([(v, entry[0]) for _, entry in by_id for v in entry[2]]
                         + [(v, VOID) for v in void]):
        if not 0 <= value <= 255:
            raise ConfigError(f'{where}: label value {value} of {owner!r} is outside 0..255; '
                              'label PNGs hold 8-bit values.')
        if value in owners:
            raise ConfigError(f'{where}: label value {value} belongs to both {owners[value]!r} '
                              f'and {owner!r}; give each value one meaning.')
        owners[value] = owner
    if any(not entry[2] for _, entry in by_id):
        raise ConfigError(f'{where}: every class needs at least one label value.')
    colors = []
    for train_id, entry in by_id:
        color = entry[3] if entry[3] is not None else colour_map(train_id + 1)
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise ConfigError(f'{where}: the colour of {entry[0]!r} must be three values in '
                              f'0..255 (red green blue); got {color}.')
        colors.append(tuple(color))
    unknown_marked = [m for m in marked if m not in names]
    if unknown_marked:
        raise ConfigError(f'{where} marks {unknown_marked}, which are not among its classes.')
    return ClassTable(name=name, names=names, values=tuple(entry[2] for _, entry in by_id),
                      colors=tuple(colors), void_values=tuple(void), marked=tuple(marked),
                      origin=origin)


def _read_json(path: str) -> ClassTable:
    try:
        with open(path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as error:
        raise ConfigError(f'The class table {path} is not valid JSON ({error}).') from None
    if not isinstance(raw, dict) or not isinstance(raw.get('classes'), list):
        raise ConfigError(f'The class table {path} must be a JSON object with a "classes" list '
                          '(see README, "Your own data").')
    where = f'The class table {path}'
    entries = [_entry(entry, where) for entry in raw['classes']]
    void, marked = raw.get('void', []), raw.get('marked', [])
    if not isinstance(void, list) or not isinstance(marked, list):
        raise ConfigError(f'{where}: "void" must be a list of values and "marked" a list of '
                          'class names, e.g. "void": [255], "marked": ["crack"].')
    name = str(raw.get('name') or os.path.splitext(os.path.basename(path))[0])
    return _table_from_entries(name, entries, [_int(v, 'void value', where) for v in void],
                               [str(m) for m in marked], path)


def _read_csv(path: str) -> ClassTable:
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    where = f'The class table {path}'
    needed = {'name', 'train_id', 'values'}
    if not rows or not needed <= set(rows[0]):
        raise ConfigError(f'{where} needs a header row with the columns name,train_id,values '
                          '(and optionally color), then one row per class.')
    entries, void = [], []
    for row in rows:
        if str(row['train_id']).strip().lower() == VOID:
            void += list(_entry(row, where)[2])
        else:
            entries.append(_entry(row, where))
    name = os.path.splitext(os.path.basename(path))[0]
    return _table_from_entries(name, entries, void, [], path)


@functools.lru_cache(maxsize=16)
def _read_file(path: str, modified: int) -> ClassTable:
    del modified  # part of the cache key only: an edited file is read again
    return _read_csv(path) if path.lower().endswith('.csv') else _read_json(path)


def class_table(spec: str) -> ClassTable:
    """The table ``spec`` names: a built-in name or the path of a .json / .csv file."""
    if spec in _BUILDERS:
        return _builtin(spec)
    path = os.path.expanduser(str(spec))
    if not path.lower().endswith(('.json', '.csv')) or not os.path.isfile(path):
        raise ConfigError(f'config.data.classes={spec!r} is neither a built-in class table '
                          f'({", ".join(BUILTIN)}) nor a .json / .csv file that exists; see '
                          'README, "Your own data", for the file format.')
    return _read_file(os.path.abspath(path), os.stat(path).st_mtime_ns)


@functools.cache
def _builtin(name: str) -> ClassTable:
    return _BUILDERS[name]()


CITYSCAPES: ClassTable = class_table('cityscapes')


def check_num_classes(table: ClassTable, num_classes: int) -> None:
    """Refuses a ``config.model.num_classes`` other than the table's number of classes."""
    if num_classes != table.num_classes:
        raise ConfigError(
            f'config.model.num_classes={num_classes} disagrees with {table.describe()}, which '
            f'has {table.num_classes} classes: the network would predict classes the labels '
            f'never hold (or miss some). Set --config.model.num_classes={table.num_classes}, '
            'or --config.data.classes to the table of your data.')


def require_cityscapes(table: ClassTable, feature: str) -> None:
    """Refuses a Cityscapes-only ``feature`` for another table, saying so."""
    if not table.is_cityscapes:
        raise ConfigError(f'{feature} is defined for Cityscapes only, and this run uses '
                          f'{table.describe()}. Leave it unset for this data set.')
