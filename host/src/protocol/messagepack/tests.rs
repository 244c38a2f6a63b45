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
        Ok(Some(ClientMessage::Completion { invocation_id, error: None, result: Some(result) }))
            if invocation_id == "1" && result.get() == "42"
    ));
    assert!(matches!(
        decode_one(&[0x95, 0x03, 0x80, 0xa1, b'1', 0x01, 0xa1, b'e']),
        Ok(Some(ClientMessage::Completion { error: Some(e), result: None, .. })) if e == "e"
    ));
    assert!(matches!(
        decode_one(&[0x94, 0x02, 0x80, 0xa1, b's', 0x92, 0x05, 0xa1, b'x']),
        Ok(Some(ClientMessage::StreamItem { invocation_id, item: Ok(item) }))
            if invocation_id == "s" && item.get() == r#"[5,"x"]"#
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
    // The error as the Close message shows it: `{exception}: {text}`.
    let error = |bytes: &[u8]| {
        let e = MESSAGEPACK
            .decode(&mut BytesMut::from(bytes), 1024)
            .expect_err(&format!("refused: {bytes:02x?}"));
        format!("{}: {e}", e.exception())
    };
    let framed_error = |body: &[u8]| error(&framed(body));
    assert_eq!(
        error(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        "InvalidDataException: Messages over 2GB in size are not supported."
    );
    assert_eq!(
        error(&[0x80, 0x10]),
        "InvalidDataException: The maximum message size of 1024B was exceeded. The message size can be configured with --max-message-size."
    );
    // The message's own array is read unwrapped: MessagePack-CSharp's exceptions.
    assert_eq!(
        framed_error(&[0x81, 0x06]),
        "MessagePackSerializationException: Unexpected msgpack code 129 (fixmap) encountered."
    );
    assert_eq!(
        framed_error(&[]),
        "EndOfStreamException: Attempted to read past the end of the stream."
    );
    // An array announcing more elements than there are bytes left.
    assert_eq!(
        framed_error(&[0x95, 0x01]),
        "EndOfStreamException: Attempted to read past the end of the stream."
    );
    // Fields are read in order; one that is missing or of the wrong kind fails by its name.
    assert_eq!(
        framed_error(&[0x90]),
        "InvalidDataException: Reading 'messageType' as Int32 failed."
    );
    assert_eq!(
        framed_error(&[0x91, 0xa0]),
        "InvalidDataException: Reading 'messageType' as Int32 failed."
    );
    assert_eq!(
        framed_error(&[0x92, 0x01, 0x80]),
        "InvalidDataException: Reading 'invocationId' as String failed."
    );
    assert_eq!(
        framed_error(&[0x93, 0x01, 0x01, 0xc0]),
        "InvalidDataException: Reading map length for 'headers' failed."
    );
    assert_eq!(
        framed_error(&[0x95, 0x01, 0x80, 0xc0, 0xa0, 0x90]),
        "InvalidDataException: Null or empty target for Invocation message."
    );
    assert_eq!(
        framed_error(&[0x95, 0x01, 0x80, 0xc0, 0xc0, 0x90]),
        "InvalidDataException: Null or empty target for Invocation message."
    );
    assert_eq!(
        framed_error(&[0x93, 0x05, 0x80, 0xa0]),
        "InvalidDataException: Null or empty invocation ID for CancelInvocation message."
    );
    assert_eq!(
        framed_error(&[0x94, 0x03, 0x80, 0xc0, 0x02]),
        "InvalidDataException: Null or empty invocation ID for Completion message."
    );
    assert_eq!(
        framed_error(&[0x94, 0x03, 0x80, 0xa1, b'1', 0x04]),
        "InvalidDataException: Invalid invocation result kind."
    );
    assert_eq!(
        framed_error(&[0x93, 0x05, 0x81, 0xa1, b'k', 0x01, 0xa0]),
        "InvalidDataException: Reading 'headers[0].Value' as String failed."
    );
    assert_eq!(
        framed_error(&[0x93, 0x05, 0x81, 0xc0, 0xa1, b'v']),
        "InvalidDataException: Null or empty key in header."
    );
    assert_eq!(
        framed_error(&[0x93, 0x05, 0x80, 0x01]),
        "InvalidDataException: Reading 'invocationId' as String failed."
    );
    assert_eq!(
        framed_error(&[0x93, 0x07, 0xc0, 0x01]),
        "InvalidDataException: Reading 'allowReconnect' as Boolean failed."
    );
    assert_eq!(
        framed_error(&[0x92, 0x08, 0xa0]),
        "InvalidDataException: Reading 'sequenceId' as Int64 failed."
    );
    // Stream ids are read unwrapped too.
    assert_eq!(
        framed_error(&[0x96, 0x01, 0x80, 0xc0, 0xa1, b'm', 0x90, 0x91, 0x01]),
        "MessagePackSerializationException: Unexpected msgpack code 1 (positive fixint) encountered."
    );
    assert_eq!(
        framed_error(&[0x96, 0x01, 0x80, 0xc0, 0xa1, b'm', 0x90, 0x91, 0xc0]),
        "InvalidDataException: Null or empty value in streamIds received."
    );
}

#[test]
fn arguments_that_cannot_be_read_are_a_binding_failure_not_a_broken_connection() {
    let failure = |body: &[u8]| match decode_one(body) {
        Ok(Some(ClientMessage::BindingFailure {
            invocation_id,
            target,
            error,
        })) => (invocation_id, target, error),
        other => panic!("unexpected {other:?}"),
    };
    // [1, {}, "1", "m", 1]: the arguments are not an array.
    assert_eq!(
        failure(&[0x95, 0x01, 0x80, 0xa1, b'1', 0xa1, b'm', 0x01]),
        (
            Some("1".to_owned()),
            "m".to_owned(),
            "Reading array length for 'arguments' failed.".to_owned()
        )
    );
    // [1, {}, nil, "m", [true, ext(5)]]: the second argument is an extension hubs cannot read.
    assert_eq!(
        failure(&[0x95, 0x01, 0x80, 0xc0, 0xa1, b'm', 0x92, 0xc3, 0xd4, 0x05, 0x00]),
        (
            None,
            "m".to_owned(),
            "Error binding argument 2. Make sure that the types of the provided values match the types of the hub method being invoked.".to_owned()
        )
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
            invocation_id: None,
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
    assert_eq!(
        encoded(ServerMessage::StreamItem {
            invocation_id: "3",
            item: "5"
        }),
        [0x06, 0x94, 0x02, 0x80, 0xa1, b'3', 0x05]
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
