"""The command line: ``python -m seg_jax.data.synthetic --output DIR
[--layout cityscapes|voc|ade20k] [--zips] [--samples PNG]``."""

import argparse
import sys

from seg_jax import console
from seg_jax.data import synthetic
from seg_jax.data.synthetic.layouts import LAYOUTS, write_ade20k, write_voc
from seg_jax.data.synthetic.writer import generate, sample_sheet
from seg_jax.errors import DataError

# Options that only one layout has; given for another, they are refused rather than ignored.
ONLY_FOR = {'num_test': 'cityscapes', 'zips': 'cityscapes', 'num_aug': 'voc'}


def main(argv: list[str] | None = None) -> None:
    """Generates a data set and/or a sample sheet; ``argv`` defaults to ``sys.argv[1:]``."""
    parser = argparse.ArgumentParser(prog='python -m seg_jax.data.synthetic',
                                     description=synthetic.__doc__.split('\n')[0])
    parser.add_argument('--output', help='Folder to write the data set into (for voc: the '
                        'VOCdevkit/VOC2012 folder; for ade20k: the folder that holds '
                        'ADEChallengeData2016).')
    parser.add_argument('--layout', choices=LAYOUTS, default='cityscapes',
                        help='Which data set\'s files and classes to write.')
    parser.add_argument('--num-train', type=int, default=24)
    parser.add_argument('--num-val', type=int, default=8)
    # None when not given, so that giving them for another layout can be refused.
    parser.add_argument('--num-test', type=int, default=None, help='cityscapes only (4).')
    parser.add_argument('--num-aug', type=int, default=None,
                        help='voc only: SBD-style SegmentationClassAug examples (0).')
    parser.add_argument('--height', type=int, default=256)
    parser.add_argument('--width', type=int, default=512)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--zips', action='store_true',
                        help='cityscapes only: also write the two TFDS zips.')
    parser.add_argument('--samples', help='Also write a PNG sheet of 4 samples here.')
    console.add_verbosity_argument(parser)
    args = parser.parse_args(argv)
    console.configure(args.verbosity)
    if args.output is None and args.samples is None:
        parser.error('pass --output (and/or --samples)')
    for name, layout in ONLY_FOR.items():
        if args.layout != layout and getattr(args, name) not in (None, False):
            parser.error(f'--{name.replace("_", "-")} applies to --layout {layout} only, not '
                         f'--layout {args.layout}')
    try:
        if args.samples:
            sample_sheet(args.samples, seed=args.seed)
        if args.output:
            common = {'num_train': args.num_train, 'num_val': args.num_val,
                      'height': args.height, 'width': args.width, 'seed': args.seed}
            if args.layout == 'voc':
                write_voc(args.output, **common,
                          num_aug=0 if args.num_aug is None else args.num_aug)
            elif args.layout == 'ade20k':
                write_ade20k(args.output, **common)
            else:
                generate(args.output, **common, zips=args.zips,
                         num_test=4 if args.num_test is None else args.num_test)
    except DataError as error:
        sys.exit(f'error: {error}')


if __name__ == '__main__':
    main()
