//! PROXY protocol settings: `accept_proxy` with its trusted networks, and
//! `send_proxy`.

use super::*;
use crate::protocol::proxy_header::{Accept, Version};

#[test]
fn accept_and_send_proxy_are_read() {
    let text = BASE
        .replace(
            "pool = \"web\"\n",
            "pool = \"web\"\naccept_proxy = \"any\"\ntrusted_sources = [\"10.0.0.0/8\", \"::1\"]\nproxy_timeout = \"1s\"\n",
        )
        .replace("address = \"127.0.0.1:9001\"", "address = \"127.0.0.1:9001\"\nsend_proxy = \"v2\"");
    let config = parse(&text).unwrap();
    let accept = config.listeners[0].accept_proxy.as_ref().unwrap();
    assert_eq!(accept.versions, Accept::Any);
    assert_eq!(accept.timeout, Duration::from_secs(1));
    assert!(accept.trusted[0].contains("10.9.8.7".parse().unwrap()));
    assert!(accept.trusted[1].contains("::1".parse().unwrap()));
    let a = config.backends.iter().find(|b| b.name == "a").unwrap();
    assert_eq!(a.send_proxy, Some(Version::V2));
    let plain = parse(BASE).unwrap();
    assert_eq!(plain.listeners[0].accept_proxy, None);
    assert_eq!(plain.backends[0].send_proxy, None);
    let v1 = BASE.replace(
        "pool = \"web\"\n",
        "pool = \"web\"\naccept_proxy = \"v1\"\ntrusted_sources = [\"127.0.0.1\"]\n",
    );
    let accept = parse(&v1).unwrap().listeners[0].accept_proxy.clone().unwrap();
    assert_eq!((accept.versions, accept.timeout), (Accept::V1, defaults::PROXY_TIMEOUT));
}

#[test]
fn proxy_mistakes_name_their_key() {
    let listener = "pool = \"web\"\n";
    for (replace, key, says) in [
        (
            "accept_proxy = \"v2\"\n",
            "listeners.front.trusted_sources",
            "the networks allowed",
        ),
        (
            "accept_proxy = \"v2\"\ntrusted_sources = []\n",
            "listeners.front.trusted_sources",
            "the networks allowed",
        ),
        (
            "accept_proxy = \"v2\"\ntrusted_sources = [\"10.0.0.1/8\"]\n",
            "listeners.front.trusted_sources",
            "address bits",
        ),
        (
            "accept_proxy = \"v2\"\ntrusted_sources = [\"any\"]\n",
            "listeners.front.trusted_sources",
            "IP address or network",
        ),
        (
            "trusted_sources = [\"10.0.0.0/8\"]\n",
            "listeners.front.trusted_sources",
            "only with accept_proxy",
        ),
        (
            "proxy_timeout = \"1s\"\n",
            "listeners.front.proxy_timeout",
            "only with accept_proxy",
        ),
        (
            "accept_proxy = \"v3\"\ntrusted_sources = [\"::1\"]\n",
            "listeners.front.accept_proxy",
            "`any`",
        ),
    ] {
        let err = broken(listener, &format!("{listener}{replace}"));
        let text = err.to_string();
        assert!(text.contains(key) && text.contains(says), "{replace:?}: {text}");
    }
    let err = broken(
        "address = \"127.0.0.1:9001\"",
        "address = \"127.0.0.1:9001\"\nsend_proxy = \"any\"",
    );
    let text = err.to_string();
    assert!(
        text.contains("backends.a.send_proxy") && text.contains("`v2`"),
        "{text}"
    );
}
