"""Property tests: recipe parsing never fails with anything but a clear TransferkitError."""

import dataclasses

import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from transferkit import recipes
from transferkit.errors import TransferkitError

scalars = st.one_of(
    st.integers(-5, 100), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.text(max_size=8)
)
keys = st.sampled_from(
    [
        "name",
        "strategy",
        "seed",
        "epochs",
        "learning_rate",
        "train",
        "fill_mode",
        "cut",
        "batch_size",
        "dropout",
        "bogus",
        "backbone",
        "phases",
    ]
)
tables = st.dictionaries(
    keys,
    st.one_of(
        scalars,
        st.dictionaries(keys, scalars, max_size=4),
        st.lists(st.dictionaries(keys, scalars, max_size=4), max_size=3),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(tables)
def test_arbitrary_toml_is_accepted_or_refused_cleanly(data):
    try:
        recipe = recipes.loads(tomli_w.dumps(data))
    except TransferkitError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert recipes.loads(recipes.dumps(recipe)) == recipe


phase = st.builds(
    recipes.Phase,
    name=st.text(min_size=1, max_size=10),
    train=st.sampled_from(recipes.TRAIN_PARTS),
    epochs=st.integers(1, 50),
    learning_rate=st.floats(1e-7, 0.5),
    top_blocks=st.integers(1, 10),
    lr_decay_per_block=st.floats(0.5, 1.0),
    min_block_lr_factor=st.floats(0.0, 0.5),
    frozen_input_stride=st.integers(0, 8),
    train_batchnorm=st.booleans(),
    schedule=st.sampled_from(recipes.SCHEDULES),
    patience=st.integers(0, 5),
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(phase, min_size=1, max_size=4, unique_by=lambda p: p.name),
    st.sampled_from(recipes.builtin_names()),
    st.integers(0, 2**31),
)
def test_valid_recipes_round_trip(phases, base, seed):
    recipe = dataclasses.replace(recipes.load_builtin(base), phases=tuple(phases), seed=seed)
    assert recipes.loads(recipes.dumps(recipe)) == recipe
