"""Binary.data (base64Binary, datatypes.html#base64Binary) is validated on write. A large
value is checked by pybase64 instead of the model's decoder; the verdict must be the model's
own for every value, valid or not."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fhir_server.resources.model import model_class, validate_resource


def _model_accepts(resource: dict) -> bool:
    try:
        model_class("Binary").model_validate(resource)
    except ValidationError:
        return False
    return True


def _binary(data: str) -> dict:
    return {"resourceType": "Binary", "contentType": "application/pdf", "data": data}


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(min_size=3072, max_size=6000),
    damage=st.one_of(
        st.none(),
        st.tuples(st.integers(0, 8191), st.sampled_from(["=", " ", "\n", "*", "é", "-", "A"])),
    ),
    cut=st.integers(0, 3),
)
def test_large_binary_data_gets_the_models_verdict(payload, damage, cut):
    data = base64.b64encode(payload).decode()
    if damage is not None:
        position, character = damage
        position %= len(data)
        data = data[:position] + character + data[position + 1 :]
    data = data[: len(data) - cut]
    resource = _binary(data)
    assert (validate_resource(resource, "Binary") == []) == _model_accepts(resource)


def test_large_binary_data_that_is_not_base64_is_refused_at_binary_data():
    issues = validate_resource(_binary("A" * 5001), "Binary")
    assert issues and issues[0].expression == ("Binary.data",)
