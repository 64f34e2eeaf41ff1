"""graph/loaders.py's ``made_on_first_use``: a request's loaders (and its Context's ``loaders``) are made when first
read, once, and forgotten when asked (a subscription's next event reads rows anew)."""

from __future__ import annotations

from graph.loaders import made_on_first_use


class Holder:
    def __init__(self) -> None:
        self.made = 0

    @made_on_first_use
    def thing(self) -> list[int]:
        self.made += 1
        return [self.made]


def test_a_value_is_made_on_first_read_only_and_kept_per_instance() -> None:
    # given two holders, nothing read yet
    first, second = Holder(), Holder()
    assert (first.made, second.made) == (0, 0)

    # when the first is read twice, the second once
    reads = [first.thing, first.thing, second.thing]

    # then each made its value once, and the first's two reads are the same object
    assert (first.made, second.made) == (1, 1)
    assert reads[0] is reads[1] and reads[0] is not reads[2]


def test_a_forgotten_value_is_made_again_and_the_class_shows_the_descriptor() -> None:
    # given a holder whose value was read
    holder = Holder()
    old = holder.thing

    # when it is forgotten as Context.refresh_loaders forgets its loaders, and read again
    holder.__dict__.pop("thing", None)
    new = holder.thing

    # then it was made anew, and the class attribute is the descriptor itself (as with cached_property)
    assert new is not old and holder.made == 2
    assert isinstance(Holder.thing, made_on_first_use)
