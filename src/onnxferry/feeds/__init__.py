"""The one feed policy: every feed set a verb runs is made, or checked, here.

    sets, plan = feed_sets(model, inputs, count=3)       # the user's (checked) or generated
    plan = plan_feeds(model, dims={"sequence": 128})     # sizes for every unknown dim
    feeds = plan.feeds(seed=0)                           # {input: array}, values as below
    plan.guessed, plan.choices                           # which sizes were chosen, and why
    sets = checked_feeds(inputs, model.signature)        # the one check of given feeds

Who calls what: ``compare`` and ``optimize`` take ``feed_sets``; ``bench`` takes
``plan_feeds`` (then ``FeedPlan.with_batch``) or ``checked_feeds`` for ``--inputs``; the
server's warm-up and ``ferry bench --url`` take ``plan_feeds``; ``convert`` (and ``compare``
against a framework source) takes ``verification_feeds``, and torch example inputs built from
``--input-shape`` take ``realistic_feeds``; optimize passes run without validation feeds take
``plan_feeds``; calibration, eval data and ``ferry test`` check what they read with
``checked_feeds``. So a model runs on the same sizes and values in every verb, and a wrong
feed is the same one-line error everywhere.

Sizes (``plan``). A dim the user names wins: ``dims`` by symbol name (``{"sequence": 128}``)
or by ``"input:axis"`` for a dim without a name (``{"x:2": 48}``), ``input_shapes`` for a
whole input, ``batch`` for the batch axis. The rest are chosen: batch axes take 1; other
unknown dims take candidates by what they look like (spatial dims of an image 224, 640, 32,
...; sequences, and dims named for a cache, 16, 128, ...; anything else 8, 16, ..., up to a
signal's 16000 samples), and the first set that ONNX Runtime runs is kept. A dim named by an
expression of others (a decoder's mask ``past_sequence_length + sequence_length``) is
computed from them (``dims``). When none runs, FeedError names the input
and asks for ``--input-shape``.
Verifying a conversion from a framework also varies each dynamic dim (``shape_plan``).

Values (``values``). Integer inputs that index a table (``Gather`` on an initializer or
constant, through casts, reshapes and a negative-index wrap; ``ranges``) or that a framework
bounds (a tokenizer's vocabulary) stay inside it, and so do float inputs cast to such an
index (Keras's Embedding), as whole numbers, and inputs indexing another input's axis (a
graph network's edges, below its node count: ``Signature.links``); ``*mask*`` inputs are 0/1
with padding; ids, token types and positions look like a tokenizer's; float images lie in
[0, 1); other floats are standard normal. String inputs that reach a text vectorizer
(``TfIdfVectorizer``) or a category encoder take its words: texts mixing its n-grams, stop
words and unknown words, in varied case and punctuation, or known categories
(``ranges.input_vocabularies``), column by column where a ``Gather`` gives each column its
own encoder; integer inputs that reach such an encoder take its integer categories the same
way.

Given feeds (``sets``). Files are read by ``data.load_feeds``; every set is checked against
the signature (names, dtypes, shapes, shared dims) by ``checked_feeds``.
"""

from .plan import (
    CANDIDATES,
    MAX_ELEMENTS,
    FeedPlan,
    Unknown,
    batch_symbols,
    describe_shapes,
    plan_feeds,
    unknown_dims,
)
from .ranges import index_ranges, input_vocabularies
from .sets import (
    BATCH_VALUES,
    OTHER_VALUES,
    Given,
    checked_feeds,
    drawn_rows,
    dynamic_dims,
    feed_sets,
    feeds_digest,
    given_sizes,
    rebatched,
    shape_plan,
    verification_feeds,
)
from .values import (
    BATCH_NAMES,
    ColumnScale,
    Vocabulary,
    random_array,
    realistic_feeds,
    vocabulary_texts,
)

__all__ = [
    "BATCH_NAMES",
    "BATCH_VALUES",
    "CANDIDATES",
    "MAX_ELEMENTS",
    "OTHER_VALUES",
    "ColumnScale",
    "FeedPlan",
    "Given",
    "Unknown",
    "Vocabulary",
    "batch_symbols",
    "checked_feeds",
    "describe_shapes",
    "drawn_rows",
    "dynamic_dims",
    "feed_sets",
    "feeds_digest",
    "given_sizes",
    "index_ranges",
    "input_vocabularies",
    "plan_feeds",
    "random_array",
    "realistic_feeds",
    "rebatched",
    "shape_plan",
    "unknown_dims",
    "verification_feeds",
    "vocabulary_texts",
]
