"""ActionSpace: spec mapping and the feature encodings every layer shares."""
import pytest
import torch
from torchrl.data import Binary, Bounded, Categorical, MultiCategorical, MultiOneHot, OneHot, Unbounded

from torchrl_amago.spaces import ActionSpace, action_space_from_spec


@pytest.mark.parametrize("spec,expected", [
    (OneHot(4), ActionSpace("discrete", 4, one_hot=True)),
    (Categorical(3, shape=(8,)), ActionSpace("discrete", 3, one_hot=False)),
    (Bounded(-1, 1, (8, 2)), ActionSpace("continuous", 2)),
    (Unbounded((5,)), ActionSpace("continuous", 5)),
    (Binary(5, shape=(3, 5)), ActionSpace("multibinary", 5)),
])
def test_spec_mapping(spec, expected):
    assert action_space_from_spec(spec) == expected


@pytest.mark.parametrize("spec", [MultiOneHot([2, 3]), MultiCategorical([2, 3]), Unbounded(())])
def test_unsupported_specs_raise_clear_errors(spec):
    with pytest.raises(ValueError, match="not supported|scalar"):
        action_space_from_spec(spec)


def test_features_and_index_roundtrip():
    idx = ActionSpace("discrete", 3)
    assert idx.to_features(torch.tensor([2, 0])).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert idx.to_features(torch.tensor([1])).tolist() == [[0, 1, 0]]  # N=1 batch keeps its batch dim
    oh = ActionSpace("discrete", 3, one_hot=True)
    a = oh.from_index(torch.tensor([1]))
    assert a.dtype == torch.long and oh.to_features(a).tolist() == [[0, 1, 0]]
    assert action_space_from_spec(OneHot(3, dtype=torch.bool)).from_index(torch.tensor([2])).dtype == torch.bool
    with pytest.raises(ValueError, match="end in dim 2"):
        ActionSpace("continuous", 2).to_features(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="unsupported action kind"):
        ActionSpace("box", 2)


def test_unit_box_affine_maps_unit_range_onto_bounds_and_rejects_unbounded():
    import numpy as np

    from torchrl_amago.spaces import unit_box_affine
    loc, scale = unit_box_affine([-2.0, 0.0], [2.0, 1.0])
    np.testing.assert_allclose(np.array([-1.0, 1.0])[:, None] * scale + loc, [[-2.0, 0.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="my space must be finite"):
        unit_box_affine([-np.inf], [1.0], "my space")
    with pytest.raises(ValueError, match="high > low"):
        unit_box_affine([1.0], [1.0])
