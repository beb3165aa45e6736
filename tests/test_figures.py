"""The confusion-matrix picture (``seg_jax.figures.confusion_figure``): what it draws, in which
colours, with which labels; the other pictures are tested through the files of a run
(tests/test_history.py)."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from seg_jax import figures
from seg_jax.data.labels import CLASS_NAMES, COURSE_CLASSES
from seg_jax.errors import ShapeError

NAMES = ('road', 'car', 'train')


def three_classes() -> np.ndarray:
    """Ground truth road: 1 pixel predicted road, 3 car; car: all 8 car; train: absent; then a
    void row (predicted road), as evaluations record it."""
    return np.array([[1, 3, 0], [0, 8, 0], [0, 0, 0], [50, 0, 0]], np.int64)


def test_rows_are_shares_of_the_ground_truth_class_and_an_absent_class_is_blank():
    shares = figures.row_normalised(three_classes()[:3])
    np.testing.assert_allclose(shares[:2], [[0.25, 0.75, 0.0], [0.0, 1.0, 0.0]])
    assert np.isnan(shares[2]).all()


def test_the_figure_draws_the_normalised_matrix_without_void_on_a_zero_to_one_scale():
    figure = figures.confusion_figure([('step 4', three_classes())], NAMES, marked=('car',))
    matrix_axis = figure.axes[0]
    [image] = matrix_axis.images
    drawn = image.get_array()
    assert drawn.shape == (3, 3)  # the void row is left out
    np.testing.assert_allclose(drawn[:2], [[0.25, 0.75, 0.0], [0.0, 1.0, 0.0]])
    assert np.ma.getmaskarray(np.ma.masked_invalid(drawn))[2].all()
    assert image.get_clim() == (0.0, 1.0)
    assert matrix_axis.get_title() == 'step 4'
    assert 'not in the ground truth' in [text.get_text() for text in matrix_axis.texts]
    # Cells of 1% or more show their share in %.
    assert {'25', '75', '100'} <= {text.get_text() for text in matrix_axis.texts}


def test_class_names_label_both_axes_and_marked_classes_stand_out():
    figure = figures.confusion_figure([('final', three_classes())], NAMES, marked=('car',))
    axis = figure.axes[0]
    assert axis.get_ylabel() == 'ground truth' and axis.get_xlabel().startswith('prediction')
    for labels in (axis.get_xticklabels(), axis.get_yticklabels()):
        assert [label.get_text() for label in labels] == list(NAMES)
        styles = {label.get_text(): (label.get_color(), label.get_fontweight())
                  for label in labels}
        assert styles['car'] == (figures.MARK_COLOUR, 'bold')
        assert styles['road'] != styles['car'] and styles['train'] == styles['road']
    # A frame around the marked class's diagonal cell, (1, 1).
    [frame] = axis.patches
    assert frame.get_xy() == (0.5, 0.5) and frame.get_width() == frame.get_height() == 1


def rendered(figure):
    """The figure's PNG as an RGB array, and a function from a panel's (row, column) cell to a
    pixel inside it (off its centre, where a share may be written)."""
    pixels = np.asarray(Image.open(io.BytesIO(figures.figure_png(figure))).convert('RGB'))

    def cell(axis, row, column):
        x, y = axis.transData.transform((column + 0.35, row + 0.35))
        return pixels[int(pixels.shape[0] - y), int(x)]
    return pixels, cell


def test_colours_follow_the_shares_and_one_scale_spans_every_panel():
    counts = np.array([[1, 3], [0, 2]])
    figure = figures.confusion_figure([('a', counts), ('b', 10 * counts), ('c', counts * 0)],
                                      ('road', 'car'))
    panels = figure.axes[:3]
    _, cell = rendered(figure)
    colour = figures.CONFUSION_COLOURS
    for axis in panels[:2]:  # the same shares in the same colours, whatever the counts
        for (row, column), share in (((0, 0), 0.25), ((0, 1), 0.75), ((1, 1), 1.0)):
            expected = np.round(255 * np.array(colour(share)[:3]))
            np.testing.assert_allclose(cell(axis, row, column), expected, atol=2)
    np.testing.assert_array_equal(cell(panels[2], 0, 0), (255, 255, 255))  # no pixels: blank
    assert len(figure.axes) == 4  # three panels and one colour bar
    assert {axis.images[0].get_clim() for axis in panels} == {(0.0, 1.0)}
    # Row labels once, on the first panel.
    assert {label.get_text() for label in panels[1].get_yticklabels()} == {''}


def test_the_figure_widens_with_each_panel_and_labels_cityscapes():
    confusion = np.ones((20, 19))
    sizes = [figures.confusion_figure([('run', confusion)] * count, CLASS_NAMES,
                                      COURSE_CLASSES).get_size_inches() for count in (1, 2, 3)]
    widths = [width for width, _ in sizes]
    assert np.diff(widths) == pytest.approx([figures.CONFUSION_PANEL_WIDTH] * 2)
    bold = [label.get_text() for label in figures.confusion_figure(
        [('run', confusion)], CLASS_NAMES, COURSE_CLASSES).axes[0].get_yticklabels()
        if label.get_fontweight() == 'bold']
    assert bold == list(COURSE_CLASSES)


@pytest.mark.parametrize('shape', [(3, 2), (5, 3), (3,)])
def test_a_matrix_that_does_not_fit_the_class_names_is_refused(shape):
    with pytest.raises(ShapeError, match=re.escape(f"'run' has shape {shape}")):
        figures.confusion_figure([('run', np.zeros(shape))], NAMES)


def test_a_confusion_matrix_of_many_classes_grows_and_leaves_out_the_cell_numbers():
    names = tuple(f'class {index}' for index in range(150))
    confusion = np.eye(151, 150, dtype=np.int64) * 100
    figure = figures.confusion_figure([('ade20k', confusion)], names, ('class 3',),
                                      marked_title='marked classes')
    axis = figure.axes[0]
    assert len(axis.texts) == 0  # 150 figures on the diagonal alone would be unreadable
    assert figure.get_size_inches()[0] > figures.CONFUSION_PANEL_WIDTH * 2
    assert [label.get_text() for label in axis.get_xticklabels()] == list(names)
    assert axis.get_xlabel() == 'prediction (red: the marked classes)'
