import pytest

from mesh.channels import channel_target, endpoints


def test_a_service_address_is_one_or_several_host_port_pairs() -> None:
    assert endpoints("invite-svc:50052") == [("invite-svc", 50052)]
    assert endpoints("127.0.0.1:50052, 127.0.0.1:50152") == [("127.0.0.1", 50052), ("127.0.0.1", 50152)]
    assert endpoints("[::1]:50052") == [("::1", 50052)]


@pytest.mark.parametrize("address", ["invite-svc", ":50052", "invite-svc:port", "a:1,,b:2"])
def test_anything_else_is_refused_with_the_part_that_is_wrong(address: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        endpoints(address)


def test_a_channel_target_is_one_address_as_it_is_or_several_ip_literals_as_one() -> None:
    assert channel_target("invite-svc:50052") == "invite-svc:50052"
    assert channel_target("127.0.0.1:1,127.0.0.2:2") == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert channel_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    with pytest.raises(ValueError):
        channel_target("invite-svc:1,invite-svc:2")
