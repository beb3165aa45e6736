"""Writing files so that an interruption never leaves a half-written file under its final name."""

import os


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to a temporary name beside ``path``, then renames it over ``path``: the
    file is either the old one or the complete new one, never a torn mix."""
    folder, name = os.path.split(os.fspath(path))
    os.makedirs(folder or '.', exist_ok=True)
    temporary = os.path.join(folder, f'.{name}.partial')
    with open(temporary, 'wb') as f:
        f.write(data)
    os.replace(temporary, path)
