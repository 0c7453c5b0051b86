use std::io::{Read, Write};
use std::net::TcpStream;

use super::*;

fn temp_socket(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sy-upgrade-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("upgrade.sock")
}

#[test]
fn the_same_sockets_pass_over_and_a_connection_queued_before_is_accepted_after() {
    let path = temp_socket("pass");
    let server = bind(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let (web, admin) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (web_addr, admin_addr) = (web.local_addr().unwrap(), admin.local_addr().unwrap());
    // Queued in web's accept queue before the hand-over.
    let mut early = TcpStream::connect(web_addr).unwrap();
    let old = std::thread::spawn(move || {
        let (mut stream, _) = server.accept().unwrap();
        let header = Header {
            pid: 7,
            sockets: vec![
                SocketGroup {
                    listener: Some("web".into()),
                    address: web_addr,
                    count: 1,
                },
                SocketGroup {
                    listener: None,
                    address: admin_addr,
                    count: 1,
                },
            ],
            health: vec![Snapshot {
                name: "db1".into(),
                address: "127.0.0.1:3306".parse().unwrap(),
                probe: "mysql".into(),
                status: Status::Up,
                admin: AdminMode::Draining,
                report: Some(Report {
                    role: crate::health::Role::Primary,
                    server_id: Some(3),
                    ..Report::default()
                }),
            }],
        };
        hand_over(&mut stream, &header, &[&web, &admin]).unwrap();
        drop((web, admin));
        say_bye(&mut stream).unwrap();
    });
    let (mut stream, mut inherited) = take_over(&path).unwrap();
    send_ready(&mut stream).unwrap();
    await_bye(&mut stream).unwrap();
    old.join().unwrap();
    assert_eq!(inherited.from_pid, 7);
    assert!(
        inherited.take_listener("web", admin_addr).is_none(),
        "only at its own address"
    );
    let web = inherited.take_listener("web", web_addr).expect("web's socket");
    assert!(inherited.take_admin(admin_addr).is_some());
    web[0].set_nonblocking(false).unwrap();
    let (mut accepted, _) = web[0].accept().expect("the queued connection is still there");
    early.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    accepted.read_exact(&mut byte).unwrap();
    let state = &inherited.health[0];
    assert_eq!((state.status, state.admin), (Status::Up, AdminMode::Draining));
    assert_eq!(state.report.as_ref().unwrap().server_id, Some(3));
}

#[test]
fn a_header_that_names_more_sockets_than_come_is_refused() {
    let path = temp_socket("count");
    let server = bind(&path).unwrap();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = web.local_addr().unwrap();
    let header = Header {
        pid: 1,
        sockets: vec![SocketGroup {
            listener: Some("web".into()),
            address,
            count: 2,
        }],
        health: Vec::new(),
    };
    assert!(
        hand_over(&mut UnixStream::pair().unwrap().0, &header, &[&web]).is_err(),
        "the sender checks too"
    );
    let old = std::thread::spawn(move || {
        // A sender that names two and sends one, then goes away.
        let (mut stream, _) = server.accept().unwrap();
        let json = serde_json::to_vec(&header).unwrap();
        stream.write_all(&(json.len() as u32).to_be_bytes()).unwrap();
        stream.write_all(&json).unwrap();
        let fds = [web.as_fd()];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(&stream, &[IoSlice::new(b"S")], &mut control, SendFlags::empty()).unwrap();
    });
    let error = take_over(&path).unwrap_err();
    assert!(error.to_string().contains("names 2 sockets, 1 came"), "{error}");
    old.join().unwrap();
}

#[test]
fn more_sockets_than_one_message_carries_pass_over() {
    let path = temp_socket("many");
    let server = bind(&path).unwrap();
    let sockets: Vec<TcpListener> = (0..MAX_SOCKETS + 7)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let groups = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| SocketGroup {
            listener: Some(format!("l{i}")),
            address: s.local_addr().unwrap(),
            count: 1,
        })
        .collect();
    let header = Header {
        pid: 2,
        sockets: groups,
        health: Vec::new(),
    };
    let old = std::thread::spawn(move || {
        let (mut stream, _) = server.accept().unwrap();
        let refs: Vec<&TcpListener> = sockets.iter().collect();
        hand_over(&mut stream, &header, &refs).unwrap();
    });
    let (mut stream, inherited) = take_over(&path).unwrap();
    send_ready(&mut stream).unwrap();
    old.join().unwrap();
    assert_eq!(inherited.listeners.len(), MAX_SOCKETS + 7);
}

#[test]
fn a_live_upgrade_socket_is_not_taken_and_a_stale_one_is_replaced() {
    let path = temp_socket("stale");
    let live = bind(&path).unwrap();
    assert_eq!(bind(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
    drop(live);
    bind(&path).expect("the file of a process that is gone is replaced");
}

#[test]
fn a_file_that_is_not_a_socket_is_never_removed() {
    let path = temp_socket("file");
    std::fs::write(&path, "config = true\n").unwrap();
    let error = bind(&path).unwrap_err();
    assert!(error.to_string().contains("not a socket"), "{error}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "config = true\n");
}
