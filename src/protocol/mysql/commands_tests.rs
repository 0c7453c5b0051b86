use super::*;

const AUTOCOMMIT: u16 = 0x0002;

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
    out.extend_from_slice(payload);
    out
}

fn ok(status: u16) -> Vec<u8> {
    let [lo, hi] = status.to_le_bytes();
    vec![0x00, 0x01, 0x00, lo, hi, 0x00, 0x00]
}

fn ok_fe(status: u16) -> Vec<u8> {
    let mut p = ok(status);
    p[0] = 0xFE;
    p
}

fn eof(status: u16) -> Vec<u8> {
    let [lo, hi] = status.to_le_bytes();
    vec![0xFE, 0x00, 0x00, lo, hi]
}

fn err() -> Vec<u8> {
    let mut p = vec![0xFF, 0x28, 0x04, b'#'];
    p.extend_from_slice(b"42000syntax");
    p
}

fn column() -> Vec<u8> {
    let mut p = vec![0x03];
    p.extend_from_slice(b"def");
    p.extend_from_slice(&[0x00; 12]);
    p
}

fn query(sql: &str) -> Vec<u8> {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    packet(0, &p)
}

fn tracker() -> Commands {
    Commands::new(0x0000_A20F, 0)
}

fn deprecating() -> Commands {
    Commands::new(0x0000_A20F | CLIENT_DEPRECATE_EOF, 0)
}

/// Feeds the server's packets one by one: busy before the last, the idleness asked
/// after it.
fn answer(c: &mut Commands, packets: &[Vec<u8>]) -> bool {
    for (i, p) in packets.iter().enumerate() {
        assert!(!c.idle(), "idle before packet {i} of the response");
        c.server(&packet(i as u8 + 1, p));
    }
    c.idle()
}

#[test]
fn a_new_session_is_idle_and_an_ok_ends_a_command() {
    let mut c = tracker();
    assert!(c.idle());
    c.client(&query("UPDATE t SET a = 1"));
    assert!(answer(&mut c, &[ok(AUTOCOMMIT)]));
}

#[test]
fn a_transaction_is_not_an_idle_point_until_it_ends() {
    let mut c = tracker();
    c.client(&query("BEGIN"));
    assert!(!answer(&mut c, &[ok(AUTOCOMMIT | 0x0001)]));
    c.client(&query("INSERT INTO t VALUES (1)"));
    assert!(!answer(&mut c, &[ok(AUTOCOMMIT | 0x0001)]));
    // An error inside a transaction leaves it open.
    c.client(&query("INSERT INTO nope VALUES (1)"));
    assert!(!answer(&mut c, &[err()]));
    c.client(&query("COMMIT"));
    assert!(answer(&mut c, &[ok(AUTOCOMMIT)]));
    assert!(!c.lost());
}

#[test]
fn a_result_set_ends_at_its_final_eof() {
    let mut c = tracker();
    c.client(&query("SELECT a, b FROM t"));
    let rows = [vec![0x01, b'1', 0x01, b'2'], vec![0x01, b'3', 0xFB]];
    let mut response = vec![vec![0x02], column(), column(), eof(AUTOCOMMIT)];
    response.extend(rows.iter().cloned());
    response.push(eof(AUTOCOMMIT));
    assert!(answer(&mut c, &response));
}

#[test]
fn with_deprecate_eof_an_fe_ok_ends_the_rows() {
    let mut c = deprecating();
    c.client(&query("SELECT a FROM t"));
    assert!(answer(
        &mut c,
        &[vec![0x01], column(), vec![0x01, b'x'], ok_fe(AUTOCOMMIT)]
    ));
    // A transaction's rows end the same way and leave it open.
    c.client(&query("SELECT a FROM t FOR UPDATE"));
    assert!(!answer(&mut c, &[vec![0x01], column(), ok_fe(AUTOCOMMIT | 0x0001)]));
}

#[test]
fn more_results_keep_the_command_going() {
    let mut c = tracker();
    c.client(&query("CALL p()"));
    let response = [
        vec![0x01],
        column(),
        eof(AUTOCOMMIT),
        vec![0x01, b'1'],
        eof(AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS),
        ok(AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS),
        ok(AUTOCOMMIT),
    ];
    assert!(answer(&mut c, &response));
}

#[test]
fn bytes_split_anywhere_frame_the_same() {
    let mut c = tracker();
    let mut wire = Vec::new();
    for (i, p) in [vec![0x01], column(), eof(AUTOCOMMIT), vec![0x01, b'1'], eof(AUTOCOMMIT)]
        .iter()
        .enumerate()
    {
        wire.extend(packet(i as u8 + 1, p));
    }
    for b in query("SELECT 1") {
        c.client(&[b]);
    }
    for (i, b) in wire.iter().enumerate() {
        assert!(!c.idle(), "idle at byte {i}");
        c.server(&[*b]);
    }
    assert!(c.idle());
    // And all at once.
    c.client(&query("SELECT 1"));
    c.server(&wire);
    assert!(c.idle());
}

#[test]
fn local_infile_waits_for_the_file_and_the_result() {
    let mut c = tracker();
    c.client(&query("LOAD DATA LOCAL INFILE 'f' INTO TABLE t"));
    c.server(&packet(1, b"\xFBf"));
    assert!(!c.idle());
    c.client(&packet(2, b"1\n2\n"));
    c.client(&packet(3, b""));
    assert!(!c.idle());
    c.server(&packet(4, &ok(AUTOCOMMIT)));
    assert!(c.idle());
}

fn prepare_ok(columns: u16, params: u16) -> Vec<u8> {
    let mut p = vec![0x00, 1, 0, 0, 0];
    p.extend_from_slice(&columns.to_le_bytes());
    p.extend_from_slice(&params.to_le_bytes());
    p.extend_from_slice(&[0x00, 0x00, 0x00]);
    p
}

#[test]
fn a_prepare_ends_after_its_definitions() {
    let mut c = tracker();
    c.client(&packet(0, b"\x16SELECT ?, ? FROM t"));
    let response = [
        prepare_ok(1, 2),
        column(),
        column(),
        eof(AUTOCOMMIT),
        column(),
        eof(AUTOCOMMIT),
    ];
    assert!(answer(&mut c, &response));
    let mut d = deprecating();
    d.client(&packet(0, b"\x16SELECT ?, ? FROM t"));
    assert!(answer(&mut d, &[prepare_ok(1, 2), column(), column(), column()]));
    d.client(&packet(0, b"\x16DO 1"));
    assert!(answer(&mut d, &[prepare_ok(0, 0)]));
    // Closing a statement has no answer.
    d.client(&packet(0, b"\x19\x01\x00\x00\x00"));
    assert!(d.idle());
}

#[test]
fn with_cached_metadata_a_repeated_execute_has_rows_right_after_its_count() {
    const EXECUTE: &[u8] = b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00";
    for deprecate_eof in [false, true] {
        let caps = 0x0000_A20F | if deprecate_eof { CLIENT_DEPRECATE_EOF } else { 0 };
        let end = || {
            if deprecate_eof {
                ok_fe(AUTOCOMMIT)
            } else {
                eof(AUTOCOMMIT)
            }
        };
        let mut c = Commands::new(caps, 1 << 4);
        // The first execute: the count says metadata follows.
        c.client(&packet(0, EXECUTE));
        let mut first = vec![vec![0x01, 0x01], column()];
        if !deprecate_eof {
            first.push(eof(AUTOCOMMIT));
        }
        first.extend([vec![0x00, 0x00, 0x2A], end()]);
        assert!(answer(&mut c, &first), "deprecate_eof={deprecate_eof}");
        // Again: no definitions, no EOF after them; the rows end it.
        c.client(&packet(0, EXECUTE));
        assert!(answer(&mut c, &[vec![0x01, 0x00], vec![0x00, 0x00, 0x2A], end()]));
    }
    // Without the capability the row would be a column definition, the EOF theirs.
    let mut plain = tracker();
    plain.client(&packet(0, EXECUTE));
    assert!(!answer(
        &mut plain,
        &[vec![0x01, 0x00], vec![0x00, 0x00, 0x2A], eof(AUTOCOMMIT)]
    ));
}

#[test]
fn an_execute_with_a_cursor_ends_after_its_columns() {
    let mut c = tracker();
    c.client(&packet(0, b"\x17\x01\x00\x00\x00\x01\x01\x00\x00\x00"));
    assert!(answer(
        &mut c,
        &[vec![0x01], column(), eof(AUTOCOMMIT | SERVER_STATUS_CURSOR_EXISTS)]
    ));
    c.client(&packet(0, b"\x1C\x01\x00\x00\x00\x10\x00\x00\x00"));
    assert!(answer(&mut c, &[vec![0x00, 0x00, 0x01], eof(AUTOCOMMIT)]));
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut c = tracker();
    let mut sent = query("SELECT 1");
    sent.extend(query("DO 2"));
    c.client(&sent);
    c.server(&packet(1, &[0x01]));
    c.server(&packet(2, &column()));
    c.server(&packet(3, &eof(AUTOCOMMIT)));
    c.server(&packet(4, &eof(AUTOCOMMIT)));
    assert!(!c.idle(), "the second command has no answer yet");
    c.server(&packet(1, &ok(AUTOCOMMIT)));
    assert!(c.idle());
}

#[test]
fn a_row_longer_than_one_packet_is_one_logical_packet() {
    let mut c = deprecating();
    c.client(&query("SELECT blob FROM t"));
    c.server(&packet(1, &[0x01]));
    c.server(&packet(2, &column()));
    // A row of 16 MiB − 1 bytes that starts like an OK continues in the next packet.
    let mut long = vec![0xFE; MAX_PAYLOAD as usize];
    long[0] = 0xFC;
    c.server(&packet(3, &long));
    assert!(!c.idle());
    c.server(&packet(4, &[0xFE, 0x00]));
    assert!(!c.idle(), "the continuation is not a terminator");
    c.server(&packet(5, &ok_fe(AUTOCOMMIT)));
    assert!(c.idle());
}

#[test]
fn what_cannot_be_followed_is_never_idle() {
    let mut c = tracker();
    c.client(&packet(0, b"\x99whatever"));
    assert!(c.lost());
    c.client(&query("SELECT 1"));
    c.server(&packet(1, &ok(AUTOCOMMIT)));
    assert!(!c.idle());

    assert!(!Commands::new(0x0000_A20F | CLIENT_COMPRESS, 0).idle());

    let mut unasked = tracker();
    unasked.server(&packet(0, &err()));
    assert!(unasked.lost());

    let mut dump = tracker();
    dump.client(&packet(0, b"\x12\x04\x00\x00\x00\x00\x00"));
    for i in 0..3 {
        dump.server(&packet(i + 1, &ok(AUTOCOMMIT)));
        assert!(!dump.idle());
    }
}

#[test]
fn a_partial_packet_is_not_an_idle_point() {
    let mut c = tracker();
    let q = query("SELECT 1");
    c.client(&q[..3]);
    assert!(!c.idle());
    c.client(&q[3..]);
    assert!(!c.idle());
    c.server(&packet(1, &ok(AUTOCOMMIT))[..5]);
    assert!(!c.idle());
}

#[test]
fn change_user_waits_for_its_ok() {
    let mut c = tracker();
    c.client(&packet(0, b"\x11bob\x00"));
    c.server(&packet(1, b"\xFEmysql_native_password\x00scramble"));
    assert!(!c.idle());
    c.client(&packet(2, b"answer"));
    assert!(!c.idle());
    c.server(&packet(3, &ok(AUTOCOMMIT)));
    assert!(c.idle());
}

#[test]
fn quiet_counts_from_the_first_look_at_unchanged_traffic() {
    let mut c = tracker();
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    assert_eq!(c.quiet_for(10, t0), Duration::ZERO);
    assert_eq!(c.quiet_for(10, t0 + ms(150)), ms(150));
    // Bytes moved: the count starts again.
    assert_eq!(c.quiet_for(12, t0 + ms(160)), Duration::ZERO);
    assert_eq!(c.quiet_for(12, t0 + ms(360)), DRAIN_QUIET);
}

#[test]
fn a_ping_at_an_idle_point_is_a_pool_checking_the_connection() {
    let ping = packet(0, b"\x0E");
    let mut c = tracker();
    c.client(&ping);
    assert!(c.pinging_at_idle());
    c.server(&packet(1, &ok(AUTOCOMMIT)));
    assert!(!c.pinging_at_idle(), "answered");
    assert!(c.idle());
    // Inside a transaction, or behind another command, it is no such check.
    c.client(&query("BEGIN"));
    c.server(&packet(1, &ok(AUTOCOMMIT | 1)));
    c.client(&ping);
    assert!(!c.pinging_at_idle());
    let mut d = tracker();
    d.client(&query("SELECT 1"));
    d.client(&ping);
    assert!(!d.pinging_at_idle());
    // A statement after the ping ends it.
    let mut e = tracker();
    e.client(&ping);
    e.client(&query("SELECT 1"));
    assert!(!e.pinging_at_idle());
}

#[test]
fn replies_of_a_node_that_cannot_serve_are_counted_and_others_not() {
    let refusal = |code: u16| {
        let [lo, hi] = code.to_le_bytes();
        let mut p = vec![0xFF, lo, hi, b'#'];
        p.extend_from_slice(b"08S01WSREP has not yet prepared node for application use");
        p
    };
    let mut c = tracker();
    c.client(&query("INSERT INTO t VALUES (1)"));
    assert!(answer(&mut c, &[refusal(1047)]), "an ERR ends the response");
    assert_eq!(c.take_refusals(), 1);
    assert_eq!(c.take_refusals(), 0, "taking resets the count");
    c.client(&query("INSERT INTO t VALUES (2)"));
    answer(&mut c, &[refusal(1290)]);
    c.client(&query("SELEC 1"));
    answer(&mut c, &[err()]);
    assert_eq!(c.take_refusals(), 1, "a syntax error (1064) says nothing of the node");
}
