def test_roundtrip(client, key):
    r = client.post("/v1.0/state/statestore", json=[{"key": key, "value": {"n": 1}}])
    assert r.status_code == 204, r.text
    r = client.get(f"/v1.0/state/statestore/{key}")
    assert r.status_code == 200 and r.json() == {"n": 1} and r.headers["etag"]
