import numpy as np
import pytest

from common.metrics import (
    confusion_matrix,
    group_mean_accuracy,
    macro_f1,
    overall_accuracy,
    per_class_accuracy,
    per_class_f1,
    summarize,
)

# 3 classes; true/pred pairs chosen by hand
Y_TRUE = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 2, 2, 2, 0, 2]


def test_confusion_matrix():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]


def test_accuracies_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert overall_accuracy(cm) == pytest.approx(7 / 10)
    assert per_class_accuracy(cm) == pytest.approx([3 / 4, 1 / 2, 3 / 4])


def test_f1_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    # class 0: P = 3/4, R = 3/4 -> 0.75; class 1: P = 1/2, R = 1/2 -> 0.5; class 2: P = 3/4, R = 3/4 -> 0.75
    assert per_class_f1(cm) == pytest.approx([0.75, 0.5, 0.75])
    assert macro_f1(cm) == pytest.approx(2 / 3)


@pytest.mark.slow
def test_f1_matches_sklearn():
    from sklearn.metrics import f1_score
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    cm = confusion_matrix(y, p, 5)
    assert macro_f1(cm) == pytest.approx(f1_score(y, p, average="macro"))
    assert per_class_f1(cm) == pytest.approx(f1_score(y, p, average=None))


def test_groups_and_absent_class():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)  # class 3 has no test sample
    assert np.isnan(per_class_accuracy(cm)[3])
    g = group_mean_accuracy(cm, {"head": [0, 1], "tail": [2, 3], "few": [3]})
    assert g["head"] == pytest.approx((0.75 + 0.5) / 2)
    assert g["tail"] == pytest.approx(0.75)  # the absent class is ignored
    assert np.isnan(g["few"])
    s = summarize(cm, {"many": [0], "medium": [1], "few": [2]})
    assert (s["many_acc"], s["medium_acc"], s["few_acc"]) == pytest.approx((0.75, 0.5, 0.75))
    assert s["per_class_acc"][3] is None
    assert s["macro_f1"] == pytest.approx(2 / 3)  # a class absent from labels and predictions does not count
