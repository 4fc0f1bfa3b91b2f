use super::*;

fn fingerprint_of(id: &Identity) -> Fingerprint {
    Fingerprint::parse(&id.fingerprint).unwrap()
}

/// A DTLS client (a browser's role) against chorus's server, datagrams
/// shuttled by hand: returns the server's keys and the client's exporter.
fn handshake(server_expects: Fingerprint) -> (Result<Option<Keys>, String>, Vec<u8>, Suite) {
    let (server_id, client_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let mut server = Dtls::server(&server_id, server_expects).unwrap();
    let ssl = Ssl::new(&client_id.ctx).unwrap();
    let mut client = match ssl.connect(Datagrams::default()) {
        Err(HandshakeError::WouldBlock(mid)) => mid,
        _ => panic!("the client waits for the server"),
    };
    let mut result = Ok(None);
    for _ in 0..10 {
        let flight: Vec<Vec<u8>> = client.get_mut().outgoing.drain(..).collect();
        let mut back = Vec::new();
        for d in flight {
            result = server.on_datagram(std::time::Instant::now(), &d, &mut back);
            if result.is_err() {
                return (result, Vec::new(), Suite::AesCm128HmacSha1_80);
            }
        }
        client.get_mut().incoming.extend(back);
        match client.handshake() {
            Ok(s) => {
                let ssl = s.ssl();
                let suite = match ssl.selected_srtp_profile().unwrap().name() {
                    "SRTP_AEAD_AES_128_GCM" => Suite::AeadAes128Gcm,
                    _ => Suite::AesCm128HmacSha1_80,
                };
                let (k, salt) = suite.key_salt_len();
                let mut m = vec![0u8; 2 * (k + salt)];
                ssl.export_keying_material(&mut m, "EXTRACTOR-dtls_srtp", None).unwrap();
                assert!(s.ssl().peer_certificate().is_some());
                let _ = fingerprint_of(&server_id);
                return (result, m, suite);
            }
            Err(HandshakeError::WouldBlock(mid)) => client = mid,
            Err(_) => panic!("client handshake failed"),
        }
    }
    panic!("no handshake after 10 flights");
}

#[test]
fn a_client_with_the_stated_fingerprint_gets_matching_srtp_keys() {
    // The client's fingerprint is only known after it is generated: check
    // with a server that expects whatever the client presents.
    let client_id = Identity::generate().unwrap();
    let server_id = Identity::generate().unwrap();
    let mut server = Dtls::server(&server_id, fingerprint_of(&client_id)).unwrap();
    let mut client = match Ssl::new(&client_id.ctx).unwrap().connect(Datagrams::default()) {
        Err(HandshakeError::WouldBlock(mid)) => mid,
        _ => panic!("the client waits for the server"),
    };
    let mut keys = None;
    let mut done = None;
    for _ in 0..10 {
        let mut back = Vec::new();
        for d in client.get_mut().outgoing.drain(..).collect::<Vec<_>>() {
            if let Some(k) = server.on_datagram(std::time::Instant::now(), &d, &mut back).unwrap() {
                keys = Some(k);
            }
        }
        client.get_mut().incoming.extend(back);
        match client.handshake() {
            Ok(s) => {
                done = Some(s);
                break;
            }
            Err(HandshakeError::WouldBlock(mid)) => client = mid,
            Err(_) => panic!("client handshake failed"),
        }
    }
    let s = done.expect("handshake completes");
    let (theirs, ours) = keys.expect("the server derived keys");
    assert_eq!(theirs.suite, Suite::AeadAes128Gcm, "GCM is preferred");
    let (k, salt) = theirs.suite.key_salt_len();
    let mut m = vec![0u8; 2 * (k + salt)];
    s.ssl()
        .export_keying_material(&mut m, "EXTRACTOR-dtls_srtp", None)
        .unwrap();
    assert_eq!(
        theirs.master,
        [&m[..k], &m[2 * k..2 * k + salt]].concat(),
        "the client's key"
    );
    assert_eq!(
        ours.master,
        [&m[k..2 * k], &m[2 * k + salt..]].concat(),
        "the server's key"
    );
    assert_ne!(theirs.master, ours.master);
}

#[test]
fn a_certificate_other_than_the_sdp_says_is_refused() {
    let other = Identity::generate().unwrap();
    let (result, _, _) = handshake(fingerprint_of(&other));
    let e = result.unwrap_err();
    assert!(e.contains("does not match the fingerprint"), "{e}");
}

#[test]
fn fingerprints_are_read_strictly() {
    let id = Identity::generate().unwrap();
    let f = fingerprint_of(&id);
    assert_eq!(f.hash, "sha-256");
    assert_eq!(f.hex.len(), 32 * 3 - 1);
    assert_eq!(Fingerprint::parse(&id.fingerprint.to_lowercase()), Ok(f));
    for bad in [
        "",
        "sha-256",
        "md5 AB:CD",
        "sha-256 AB:CD",
        "sha-1 ZZ:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00",
    ] {
        assert!(Fingerprint::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn garbage_fails_the_stream_without_panic() {
    let id = Identity::generate().unwrap();
    let mut d = Dtls::server(&id, fingerprint_of(&id)).unwrap();
    let mut out = Vec::new();
    let r = d.on_datagram(
        std::time::Instant::now(),
        &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5],
        &mut out,
    );
    assert!(r.is_err() || r == Ok(None));
    for _ in 0..3 {
        let _ = d.on_datagram(std::time::Instant::now(), &[0xff; 40], &mut out);
    }
}

#[test]
fn as_server_chorus_resends_its_flight_when_the_client_stays_silent() {
    let (chorus_id, client_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let mut chorus = Dtls::server(&chorus_id, fingerprint_of(&client_id)).unwrap();
    let mut client = match Ssl::new(&client_id.ctx).unwrap().connect(Datagrams::default()) {
        Err(HandshakeError::WouldBlock(mid)) => mid,
        _ => panic!("the client waits for the server"),
    };
    let t0 = std::time::Instant::now();
    let mut flight = Vec::new();
    for d in client.get_mut().outgoing.drain(..).collect::<Vec<_>>() {
        chorus.on_datagram(t0, &d, &mut flight).unwrap();
    }
    assert!(!flight.is_empty(), "the server's flight");
    // Lost on the way: the same flight again once the timer has run.
    let mut again = Vec::new();
    chorus.retransmit(t0 + std::time::Duration::from_millis(500), &mut again);
    assert!(again.is_empty());
    chorus.retransmit(t0 + std::time::Duration::from_millis(1100), &mut again);
    assert_eq!(again, flight);
    client.get_mut().incoming.extend(again);
    let mut client = match client.handshake() {
        Err(HandshakeError::WouldBlock(mid)) => mid,
        _ => panic!("the client answers the resent flight"),
    };
    let mut keys = None;
    for d in client.get_mut().outgoing.drain(..).collect::<Vec<_>>() {
        let mut back = Vec::new();
        keys = keys.or(chorus.on_datagram(t0, &d, &mut back).unwrap());
        client.get_mut().incoming.extend(back);
    }
    assert!(keys.is_some(), "the handshake completes on the resent flight");
    assert!(client.handshake().is_ok());
    // Done: nothing more to resend.
    let mut late = Vec::new();
    chorus.retransmit(t0 + std::time::Duration::from_secs(10), &mut late);
    assert!(late.is_empty());
}

#[test]
fn as_client_chorus_starts_resends_and_gets_keys_of_its_role() {
    let (chorus_id, peer_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let mut chorus = Dtls::new(&chorus_id, fingerprint_of(&peer_id), Role::Client).unwrap();
    let t0 = std::time::Instant::now();
    let mut hello = Vec::new();
    chorus.start(t0, &mut hello).unwrap();
    assert!(!hello.is_empty(), "a ClientHello");
    // Lost: nothing before the timer, the same flight after it.
    let mut again = Vec::new();
    chorus.retransmit(t0 + std::time::Duration::from_millis(500), &mut again);
    assert!(again.is_empty());
    chorus.retransmit(t0 + std::time::Duration::from_millis(1100), &mut again);
    assert_eq!(again, hello, "the ClientHello again");
    // The peer, as server, answers the retransmission.
    let mut server = match Ssl::new(&peer_id.ctx).unwrap().accept({
        let mut d = Datagrams::default();
        d.incoming.extend(again);
        d
    }) {
        Err(HandshakeError::WouldBlock(mid)) => mid,
        _ => panic!("the server waits"),
    };
    let mut keys = None;
    for _ in 0..10 {
        let mut back = Vec::new();
        for d in server.get_mut().outgoing.drain(..).collect::<Vec<_>>() {
            if let Some(k) = chorus.on_datagram(t0, &d, &mut back).unwrap() {
                keys = Some(k);
            }
        }
        server.get_mut().incoming.extend(back);
        match server.handshake() {
            Ok(mut s) => {
                // The server's last flight completes chorus's side.
                let mut back = Vec::new();
                for d in s.get_mut().outgoing.drain(..).collect::<Vec<_>>() {
                    if let Some(k) = chorus.on_datagram(t0, &d, &mut back).unwrap() {
                        keys = Some(k);
                    }
                }
                let (theirs, ours) = keys.expect("chorus derived keys");
                let (k, salt) = ours.suite.key_salt_len();
                let mut m = vec![0u8; 2 * (k + salt)];
                s.ssl()
                    .export_keying_material(&mut m, "EXTRACTOR-dtls_srtp", None)
                    .unwrap();
                assert_eq!(
                    ours.master,
                    [&m[..k], &m[2 * k..2 * k + salt]].concat(),
                    "chorus encrypts as client"
                );
                assert_eq!(theirs.master, [&m[k..2 * k], &m[2 * k + salt..]].concat());
                return;
            }
            Err(HandshakeError::WouldBlock(mid)) => server = mid,
            Err(_) => panic!("server handshake failed"),
        }
    }
    panic!("no handshake after 10 flights");
}

#[test]
fn a_configured_certificate_is_used_and_a_wrong_key_refused() {
    let dir = std::env::temp_dir().join(format!("chorus-dtls-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = |name: &str| dir.join(name).to_string_lossy().to_string();
    // openssl(1) is not needed: the crate writes the PEM files.
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let keys: Vec<PKey<openssl::pkey::Private>> = (0..2)
        .map(|_| PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap())
        .collect();
    let mut b = X509::builder().unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "pbx.example").unwrap();
    let name = name.build();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&keys[0]).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    b.sign(&keys[0], MessageDigest::sha256()).unwrap();
    let cert = b.build();
    std::fs::write(pem("cert.pem"), cert.to_pem().unwrap()).unwrap();
    std::fs::write(pem("key.pem"), keys[0].private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(pem("other.pem"), keys[1].private_key_to_pem_pkcs8().unwrap()).unwrap();
    let id = Identity::from_config(Some(&pem("cert.pem")), Some(&pem("key.pem"))).unwrap();
    let digest = hex_colons(&cert.digest(MessageDigest::sha256()).unwrap());
    assert_eq!(id.fingerprint, format!("sha-256 {digest}"));
    let e = Identity::from_config(Some(&pem("cert.pem")), Some(&pem("other.pem")))
        .err()
        .unwrap();
    assert!(e.contains("does not match"), "{e}");
    let e = Identity::from_config(Some(&pem("cert.pem")), None).err().unwrap();
    assert!(e.contains("both"), "{e}");
    let e = Identity::from_config(Some(&pem("missing.pem")), Some(&pem("key.pem")))
        .err()
        .unwrap();
    assert!(e.contains("cannot read"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
