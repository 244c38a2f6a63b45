use super::*;

/// A message as a client writes it: the varint length, then the bytes.
fn framed(body: &[u8]) -> BytesMut {
    let mut out = Vec::new();
    length_prefix(body.len(), &mut out);
    out.extend_from_slice(body);
    BytesMut::from(&out[..])
}

fn decode_one(body: &[u8]) -> Result<Option<ClientMessage>, ProtocolError> {
    MESSAGEPACK.decode(&mut framed(body), 32 * 1024)
}

#[test]
fn decodes_an_invocation_as_the_official_client_writes_it() {
    // [1, {}, "0", "Echo", ["hi", 5]]: the client writes 5 elements without streams.
    let body = [
        0x95, 0x01, 0x80, 0xa1, b'0', 0xa4, b'E', b'c', b'h', b'o', 0x92, 0xa2, b'h', b'i', 0x05,
    ];
    match decode_one(&body) {
        Ok(Some(ClientMessage::Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        })) => {
            assert_eq!(invocation_id.as_deref(), Some("0"));
            assert_eq!(target, "Echo");
            assert_eq!(arguments.get(), r#"["hi",5]"#);
            assert!(stream_ids.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    // Without an id (nil), with headers and stream ids.
    let body = [
        0x96, 0x01, 0x81, 0xa1, b'k', 0xa1, b'v', 0xc0, 0xa1, b'X', 0x90, 0x91, 0xa1, b'1',
    ];
    match decode_one(&body) {
        Ok(Some(ClientMessage::Invocation {
            invocation_id: None,
            stream_ids,
            ..
        })) => assert_eq!(stream_ids, ["1"]),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn decodes_the_other_messages() {
    assert!(matches!(
        decode_one(&[0x91, 0x06]),
        Ok(Some(ClientMessage::Ping))
    ));
    assert!(matches!(
        decode_one(&[0x92, 0x07, 0xc0]),
        Ok(Some(ClientMessage::Close { error: None }))
    ));
    assert!(matches!(
        decode_one(&[0x93, 0x07, 0xa1, b'e', 0xc3]),
        Ok(Some(ClientMessage::Close { error: Some(e) })) if e == "e"
    ));
    assert!(matches!(
        decode_one(&[0x93, 0x05, 0x80, 0xa1, b'3']),
        Ok(Some(ClientMessage::CancelInvocation { invocation_id })) if invocation_id == "3"
    ));
    assert!(matches!(
        decode_one(&[0x95, 0x03, 0x80, 0xa1, b'1', 0x03, 0x2a]),
        Ok(Some(ClientMessage::Completion { invocation_id })) if invocation_id == "1"
    ));
    assert!(matches!(
        decode_one(&[0x91, 0x63]),
        Ok(Some(ClientMessage::Unknown(99)))
    ));
}

#[test]
fn waits_for_the_rest_of_a_message_and_of_its_length() {
    let mut buffer = BytesMut::from(&[0x80][..]);
    assert!(matches!(MESSAGEPACK.decode(&mut buffer, 1024), Ok(None)));
    let mut buffer = BytesMut::from(&[0x02, 0x91][..]);
    assert!(matches!(MESSAGEPACK.decode(&mut buffer, 1024), Ok(None)));
    buffer.extend_from_slice(&[0x06, 0x02, 0x91, 0x06]);
    assert!(matches!(
        MESSAGEPACK.decode(&mut buffer, 1024),
        Ok(Some(ClientMessage::Ping))
    ));
    assert!(matches!(
        MESSAGEPACK.decode(&mut buffer, 1024),
        Ok(Some(ClientMessage::Ping))
    ));
    assert!(buffer.is_empty());
}

#[test]
fn refuses_malformed_input_with_aspnet_texts() {
    let error = |bytes: &[u8]| {
        MESSAGEPACK
            .decode(&mut BytesMut::from(bytes), 1024)
            .expect_err(&format!("refused: {bytes:02x?}"))
            .to_string()
    };
    assert_eq!(
        error(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        "Messages over 2GB in size are not supported."
    );
    assert_eq!(
        error(&[0x80, 0x10]),
        "The maximum message size of 1024B was exceeded. The message size can be configured with --max-message-size."
    );
    // A map where the message's array should be: MessagePack-CSharp's text, as ASP.NET gives.
    assert_eq!(
        error(&[0x02, 0x81, 0x06]),
        "Unexpected msgpack code 129 (fixmap) encountered."
    );
    assert_eq!(
        error(&[0x02, 0x91, 0xa0]),
        "Reading 'messageType' as Int32 failed."
    );
    assert_eq!(
        error(&[0x03, 0x92, 0x01, 0x80]),
        "Attempted to read past the end of the stream."
    );
    assert_eq!(
        error(&[0x06, 0x95, 0x01, 0x80, 0xc0, 0xa0, 0x90]),
        "Null or empty target for Invocation message."
    );
    assert_eq!(
        error(&[0x04, 0x93, 0x05, 0x80, 0xa0]),
        "Null or empty invocation ID for CancelInvocation message."
    );
    assert_eq!(
        error(&[0x07, 0x93, 0x05, 0x81, 0xa1, b'k', 0x01, 0xa0]),
        "Reading 'headers[0].Value' as String failed."
    );
    assert_eq!(
        error(&[0x04, 0x93, 0x05, 0x80, 0x01]),
        "Reading 'invocationId' as String failed."
    );
}

fn encoded(message: ServerMessage<'_>) -> Vec<u8> {
    let frame = MESSAGEPACK.encode(&message);
    assert_eq!(frame.format(), TransferFormat::Binary);
    frame.as_bytes().to_vec()
}

#[test]
fn encodes_what_the_official_client_reads() {
    assert_eq!(encoded(ServerMessage::Ping), [0x02, 0x91, 0x06]);
    assert_eq!(
        encoded(ServerMessage::Invocation {
            target: "m",
            arguments: r#"["a",1]"#
        }),
        [
            0x0b, 0x96, 0x01, 0x80, 0xc0, 0xa1, b'm', 0x92, 0xa1, b'a', 0x01, 0x90
        ]
    );
    let completion = |completion| ServerMessage::Completion {
        invocation_id: "7",
        completion,
    };
    assert_eq!(
        encoded(completion(Completion::Void)),
        [0x06, 0x94, 0x03, 0x80, 0xa1, b'7', 0x02]
    );
    assert_eq!(
        encoded(completion(Completion::Result("42"))),
        [0x07, 0x95, 0x03, 0x80, 0xa1, b'7', 0x03, 0x2a]
    );
    assert_eq!(
        encoded(completion(Completion::Error("no"))),
        [0x09, 0x95, 0x03, 0x80, 0xa1, b'7', 0x01, 0xa2, b'n', b'o']
    );
    assert_eq!(
        encoded(ServerMessage::Close {
            error: None,
            allow_reconnect: true
        }),
        [0x04, 0x93, 0x07, 0xc0, 0xc3]
    );
}

#[test]
fn a_result_round_trips_through_json() {
    let bytes = encoded(ServerMessage::Completion {
        invocation_id: "1",
        completion: Completion::Result(
            r#"{"n":18446744073709551615,"s":"x","l":[null,true,-2,0.5]}"#,
        ),
    });
    // Read it back as a client argument would be: skip the prefix and the completion's
    // first four elements.
    let mut r = Reader::new(&bytes[1..]);
    assert_eq!(r.array_len("elementCount").unwrap(), 5);
    for _ in 0..4 {
        r.skip().unwrap();
    }
    let mut json = String::new();
    r.json(&mut json, 0).unwrap();
    assert_eq!(
        json,
        r#"{"n":18446744073709551615,"s":"x","l":[null,true,-2,0.5]}"#
    );
}
