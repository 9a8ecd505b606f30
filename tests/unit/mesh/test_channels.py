import pytest

from mesh.channels import endpoints


def test_a_service_address_is_one_or_several_host_port_pairs() -> None:
    assert endpoints("invite-svc:50052") == [("invite-svc", 50052)]
    assert endpoints("127.0.0.1:50052, 127.0.0.1:50152") == [("127.0.0.1", 50052), ("127.0.0.1", 50152)]
    assert endpoints("[::1]:50052") == [("::1", 50052)]


@pytest.mark.parametrize("address", ["invite-svc", ":50052", "invite-svc:port", "a:1,,b:2"])
def test_anything_else_is_refused_with_the_part_that_is_wrong(address: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        endpoints(address)
