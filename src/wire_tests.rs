use super::*;

#[test]
fn channel_messages_round_trip() {
    let msgs = [
        ChannelMsg::Ready { pid: Some(42) },
        ChannelMsg::Ready { pid: None },
        ChannelMsg::Error("config: bad key".into()),
        ChannelMsg::ExecFailed(2),
        ChannelMsg::Primary,
        ChannelMsg::PrimaryAck,
        ChannelMsg::State(b"count=41\n\0binary"),
        ChannelMsg::State(b""),
        ChannelMsg::Conn {
            kind: ConnKind::Tcp,
            moves: 3,
            client: None,
            unread: b"GET / HTTP/1.1\r\n",
        },
        ChannelMsg::Conn {
            kind: ConnKind::Unix,
            moves: 0,
            client: None,
            unread: b"",
        },
        // The client's address from a PROXY header, v4 and v6, on TCP and Unix sockets.
        ChannelMsg::Conn {
            kind: ConnKind::Tcp,
            moves: 1,
            client: Some("192.0.2.7:41000".parse().unwrap()),
            unread: b"GET / HTTP/1.1\r\n\r\n",
        },
        ChannelMsg::Conn {
            kind: ConnKind::Unix,
            moves: 2,
            client: Some("[2001:db8::7]:9".parse().unwrap()),
            unread: b"",
        },
        ChannelMsg::Ws(WsConn {
            kind: ConnKind::Tcp,
            moves: 7,
            path: "/ws?room=a b",
            headers: b"host: t\r\ncookie: a=1\r\n",
            state: b"41\n\0",
            // A partial masked frame: header, mask, half the payload.
            unread: b"\x81\x85\x01\x02\x03\x04hi",
            client: None,
        }),
        ChannelMsg::Ws(WsConn {
            kind: ConnKind::Tcp,
            moves: 1,
            path: "/ws",
            headers: b"host: t\r\n",
            state: b"7",
            unread: b"\x81",
            client: Some("[::ffff:127.0.0.7]:5".parse().unwrap()),
        }),
        ChannelMsg::Ws(WsConn {
            kind: ConnKind::Unix,
            moves: 0,
            path: "",
            headers: b"",
            state: b"",
            unread: b"",
            client: None,
        }),
    ];
    for m in msgs {
        let bytes = m.encode();
        assert_eq!(ChannelMsg::parse(&bytes), Some(m));
    }
}

#[test]
fn channel_garbage_is_rejected() {
    for bad in [
        &b"hello"[..],
        b"ready x",
        b"conn udp 1\n",
        b"conn tcp x\n",
        b"conn tcp 1",
        b"conn tcp 1 nowhere\n",
        b"conn tcp 1 127.0.0.1:1 x\n",
        b"conn tcp 1 127.0.0.1\n",
        b"ws tcp 1 3 0 0 127.0.0.1\n/ws",
        b"ws tcp 1 3 0 0 127.0.0.1:1 x\n/ws",
        b"primary now",
        b"ws tcp 1 3 0 0\n/w",
        b"ws tcp 1 3 0\n/ws",
        b"ws tcp 1 3 0 1 9\n/wsx",
        b"ws tcp 1 18446744073709551615 1 1\n/ws",
        b"ws tcp 1 1 18446744073709551615 1\n/ws",
        b"ws tcp 1 2 0 0\n\xff\xfe",
        b"ws udp 1 0 0 0\n",
        b"\xff\xfe",
        b"",
    ] {
        assert_eq!(ChannelMsg::parse(bad), None, "{bad:?}");
    }
    // The forked child writes its errno by hand, padded by nothing.
    assert_eq!(
        ChannelMsg::parse(b"exec-failed 13"),
        Some(ChannelMsg::ExecFailed(13))
    );
}

#[test]
fn a_message_without_a_client_is_what_older_versions_wrote() {
    let m = ChannelMsg::Conn {
        kind: ConnKind::Tcp,
        moves: 2,
        client: None,
        unread: b"x",
    };
    assert_eq!(m.encode(), b"conn tcp 2\nx");
    let m = ChannelMsg::Conn {
        kind: ConnKind::Tcp,
        moves: 2,
        client: Some("127.0.0.7:80".parse().unwrap()),
        unread: b"x",
    };
    assert_eq!(m.encode(), b"conn tcp 2 127.0.0.7:80\nx");
}

#[test]
fn control_answers_round_trip() {
    let answers = [
        ControlAnswer::Ok {
            pid: 7,
            generation: 3,
        },
        ControlAnswer::Failed("successor 9 exited before it was ready (exit status 1)".into()),
        ControlAnswer::Retry("handed over to pid 9".into()),
        ControlAnswer::Error("unknown command \"x\"".into()),
    ];
    for a in answers {
        assert_eq!(ControlAnswer::parse(&a.to_string()), a);
    }
    assert!(matches!(
        ControlAnswer::parse("ok pid=x"),
        ControlAnswer::Error(_)
    ));
    assert!(matches!(ControlAnswer::parse("bogus"), ControlAnswer::Error(_)));
}
