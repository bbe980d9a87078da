//! PBFT messages from peers: their signatures checked off the event loop before the driver
//! sees them.

use std::sync::Arc;

use tally_consensus::PeerMessage;
use tally_consensus::pbft::Message;
use tally_crypto::{CryptoError, Verified};
use tally_monitoring::Metrics;
use tokio::sync::mpsc;
use tracing::debug;

use crate::driver::DriverInput;
use crate::ingress::admission::checked_counter;
use crate::ingress::verify::{Priority, VerifyPool};
use crate::shared::Shared;

/// Verifies consensus messages off the loop and hands the valid ones to the driver.
/// A message whose signature fails is an offence of the peer that sent it (`from`, the key
/// that authenticated the connection): honest validators sign what they send.
pub fn consensus_verifier(
    shared: Arc<Shared>,
    driver: mpsc::Sender<DriverInput>,
    conduct: Arc<crate::ingress::conduct::Conduct>,
) -> VerifyPool<Message, tally_crypto::PublicKey> {
    let metrics = shared.metrics.clone();
    VerifyPool::spawn(
        Arc::new(shared.validators.clone()),
        shared.chain_id.clone(),
        256,
        65_536,
        Priority::Normal,
        None,
        checked_counter(&shared, "consensus"),
        Arc::new(
            move |from, result: Option<Result<Verified<Message>, CryptoError>>| match result {
                None => {}
                Some(Ok(m)) => {
                    let dropped = driver
                        .try_send(DriverInput::Message(PeerMessage::Pbft(m)))
                        .is_err();
                    if dropped {
                        metrics
                            .p2p_dropped
                            .get_or_create(&tally_monitoring::DirectionLabels {
                                direction: "in".into(),
                            })
                            .inc();
                    }
                }
                Some(Err(e)) => {
                    debug!("consensus message refused: {e}");
                    Metrics::inc_kind(&metrics.signature_rejections, "consensus", 1);
                    conduct.offence(&from, "bad_signature");
                }
            },
        ),
    )
}
