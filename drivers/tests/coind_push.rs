//! Push notifications over real sockets on 127.0.0.1: the UDP datagram port, and a ZMQ PUB
//! socket standing in for bitcoind's `-zmqpubhashblock`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use powerpool_core::coinserver::{PushSignal, PushSource};
use powerpool_core::hash::Hash256;
use powerpool_drivers::push::{UdpPushConfig, run_udp, run_zmq, sign_datagram};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use zeromq::{Socket, SocketSend, ZmqMessage};

// Mainnet block 100000.
const H100K: &str = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506";
// Mainnet genesis.
const H0: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";

async fn recv(rx: &mut mpsc::Receiver<PushSignal>) -> PushSignal {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("signal within 10 s")
        .expect("listener running")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn udp_signed_notifications_only() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let secret = b"correct horse".to_vec();
    let listener = tokio::spawn(run_udp(
        sock,
        UdpPushConfig {
            coin: "BTC".into(),
            secret: Some(secret.clone()),
        },
        tx,
    ));
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Refused: the original's method-call form, unsigned, wrong key, and another coin.
    let refused = || {
        [
            "LTC getblocktemplate signal=1 __spawn=1".to_owned(),
            format!("blocknotify BTC {H100K}"),
            sign_datagram("blocknotify BTC", b"wrong key", unix_now()),
            sign_datagram("blocknotify LTC", &secret, unix_now()),
        ]
    };
    let good = sign_datagram(&format!("blocknotify BTC {H100K}"), &secret, unix_now());
    // A second good datagram whose signal no other datagram here could produce.
    let marker = sign_datagram(&format!("blocknotify BTC {H0}"), &secret, unix_now());
    // Datagrams on loopback arrive in order and the listener handles them one by one, so the
    // signals must be exactly the good one's, then the marker's: any refused datagram (before
    // or after the good one) or a repeat of the good one would come between.
    let mut sequence = refused().to_vec();
    sequence.push(format!("{good}\n"));
    sequence.extend(refused());
    sequence.push(marker);
    for d in &sequence {
        sender.send_to(d.as_bytes(), addr).await.unwrap();
    }
    assert_eq!(
        recv(&mut rx).await,
        PushSignal {
            source: PushSource::Udp,
            block_hash: Some(Hash256::from_display_hex(H100K).unwrap())
        }
    );
    assert_eq!(
        recv(&mut rx).await,
        PushSignal {
            source: PushSource::Udp,
            block_hash: Some(Hash256::from_display_hex(H0).unwrap())
        }
    );
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), listener)
        .await
        .expect("listener stops when the driver is gone")
        .unwrap();
}

#[tokio::test]
async fn zmq_hashblock_from_a_publisher() {
    let mut publisher = zeromq::PubSocket::new();
    let endpoint = publisher.bind("tcp://127.0.0.1:0").await.unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let sub = tokio::spawn(run_zmq(endpoint.to_string(), Duration::from_millis(50), tx));

    let display = hex::decode(H100K).unwrap();
    // A subscriber joins asynchronously and PUB drops messages until then (as bitcoind's
    // does), so publish until one arrives; other topics must never be forwarded.
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seq: u32 = 0;
        loop {
            let mut other = ZmqMessage::from("hashtx");
            other.push_back(vec![0u8; 32].into());
            publisher.send(other).await.unwrap();
            let mut m = ZmqMessage::from("hashblock");
            m.push_back(display.clone().into());
            m.push_back(seq.to_le_bytes().to_vec().into());
            publisher.send(m).await.unwrap();
            seq += 1;
            tokio::select! {
                s = rx.recv() => return s.unwrap(),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    })
    .await
    .expect("hashblock within 10 s");
    assert_eq!(
        got,
        PushSignal {
            source: PushSource::Zmq,
            block_hash: Some(Hash256::from_display_hex(H100K).unwrap())
        }
    );
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), sub)
        .await
        .expect("subscriber stops when the driver is gone")
        .unwrap();
}
