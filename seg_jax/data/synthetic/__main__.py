"""The command line: ``python -m seg_jax.data.synthetic --output DIR [--zips] [--samples PNG]``."""

import argparse
import sys

from seg_jax import console
from seg_jax.data import synthetic
from seg_jax.data.synthetic.writer import generate, sample_sheet
from seg_jax.errors import DataError


def main(argv: list[str] | None = None) -> None:
    """Generates a data set and/or a sample sheet; ``argv`` defaults to ``sys.argv[1:]``."""
    parser = argparse.ArgumentParser(prog='python -m seg_jax.data.synthetic',
                                     description=synthetic.__doc__.split('\n')[0])
    parser.add_argument('--output', help='Folder to write the data set into.')
    parser.add_argument('--num-train', type=int, default=24)
    parser.add_argument('--num-val', type=int, default=8)
    parser.add_argument('--num-test', type=int, default=4)
    parser.add_argument('--height', type=int, default=256)
    parser.add_argument('--width', type=int, default=512)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--zips', action='store_true', help='Also write the two TFDS zips.')
    parser.add_argument('--samples', help='Also write a PNG sheet of 4 samples here.')
    console.add_verbosity_argument(parser)
    args = parser.parse_args(argv)
    console.configure(args.verbosity)
    if args.output is None and args.samples is None:
        parser.error('pass --output (and/or --samples)')
    try:
        if args.samples:
            sample_sheet(args.samples, seed=args.seed)
        if args.output:
            generate(args.output, num_train=args.num_train, num_val=args.num_val,
                     num_test=args.num_test, height=args.height, width=args.width,
                     seed=args.seed, zips=args.zips)
    except DataError as error:
        sys.exit(f'error: {error}')


if __name__ == '__main__':
    main()
