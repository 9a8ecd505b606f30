from mesh.redis import KeySpace


def test_keys_are_prefixed_by_service() -> None:
    assert KeySpace("invite:").key("hold", "42") == "invite:hold:42"


def test_tagged_keys_share_a_cluster_slot_tag() -> None:
    keys = KeySpace("auth")
    assert keys.tagged("u1", "session") == "auth:{u1}:session"
    assert keys.tagged("u1", "refresh").split(":")[1] == keys.tagged("u1", "session").split(":")[1]
