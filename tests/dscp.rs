//! Outgoing media carries the configured DSCP (default EF, 46): the TOS byte
//! of packets chorus relays, read at the receiver with IP_RECVTOS.

mod common;
use common::*;

#[tokio::test]
async fn relayed_media_is_marked_ef_by_default_and_as_configured() {
    for (slot, args, dscp) in [(50u16, vec![], 46u8), (51, vec!["--dscp", "34"], 34)] {
        let d = Daemon::start(slot, &args).await;
        let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
        let (to_a, _) = d.call("dscp", &a, &b).await;
        a.send_rtp(to_a);
        assert_eq!(recv_tos(&b.rtp), Some(dscp << 2), "DSCP {dscp}");
    }
}
