//! Payout addresses → scriptPubKey, for every standard address type on any configured network.
//!
//! - Base58Check (P2PKH, P2SH) with the network's version bytes.
//! - Native segwit per BIP173 (bech32, witness v0: P2WPKH, P2WSH) and BIP350 (bech32m, v1+:
//!   P2TR and future versions), with the network's human-readable part. Mixed case, wrong
//!   checksum variant, bad padding and bad program lengths are rejected by the bech32 crate's
//!   segwit decoder.
//!
//! The original pool turned every base58 payload into a P2PKH script whatever its version byte,
//! so a P2SH pool address produced an unspendable-by-owner output, and it could not pay segwit
//! addresses at all. Here the script always matches the address
//! type, and an address for another network is refused with an error naming both networks.
//!
//! Witness versions 2..=16 decode as [`AddressKind::Witness`] as BIP350 asks; outputs to them
//! are anyone-can-spend until a soft fork defines them, so a caller that pays miners may want to
//! refuse that kind.

use std::borrow::Cow;

use bech32::primitives::decode::{
    CharError, ChecksumError, SegwitHrpstring, SegwitHrpstringError, UncheckedHrpstringError,
};

use crate::encode::opcode;

/// The address encoding parameters of one network.
///
/// An empty `hrp` means the network has no native segwit addresses (then bech32 strings are
/// refused rather than turned into witness outputs the chain would not protect).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressParams {
    pub p2pkh: u8,
    pub p2sh: u8,
    pub hrp: Cow<'static, str>,
}

impl AddressParams {
    /// Bitcoin mainnet: `1...`, `3...`, `bc1...`.
    pub const BITCOIN: AddressParams = AddressParams {
        p2pkh: 0x00,
        p2sh: 0x05,
        hrp: Cow::Borrowed("bc"),
    };
    /// Bitcoin testnet3/testnet4 and signet: `m/n...`, `2...`, `tb1...`.
    pub const TESTNET: AddressParams = AddressParams {
        p2pkh: 0x6f,
        p2sh: 0xc4,
        hrp: Cow::Borrowed("tb"),
    };
    /// Bitcoin regtest: same base58 versions as testnet, `bcrt1...`.
    pub const REGTEST: AddressParams = AddressParams {
        p2pkh: 0x6f,
        p2sh: 0xc4,
        hrp: Cow::Borrowed("bcrt"),
    };
    /// Litecoin mainnet: `L...`, `M...`, `ltc1...`. Litecoin Core also still decodes the old
    /// `3...` (version 5) P2SH form; it is refused here because it is indistinguishable from a
    /// Bitcoin P2SH address, a common source of lost payouts.
    pub const LITECOIN: AddressParams = AddressParams {
        p2pkh: 0x30,
        p2sh: 0x32,
        hrp: Cow::Borrowed("ltc"),
    };
    /// Litecoin testnet: `m/n...`, `Q...` (version 58), `tltc1...`.
    pub const LITECOIN_TESTNET: AddressParams = AddressParams {
        p2pkh: 0x6f,
        p2sh: 0x3a,
        hrp: Cow::Borrowed("tltc"),
    };
    /// Dogecoin mainnet: `D...`, `9.../A...`. Segwit is not active on Dogecoin, so no hrp.
    pub const DOGECOIN: AddressParams = AddressParams {
        p2pkh: 0x1e,
        p2sh: 0x16,
        hrp: Cow::Borrowed(""),
    };

    /// A human name for these parameters, for error messages.
    pub fn network_name(&self) -> String {
        KNOWN_NETWORKS
            .iter()
            .find(|(_, p)| p == self)
            .map(|(name, _)| (*name).to_string())
            .unwrap_or_else(|| {
                format!(
                    "the configured network (version bytes {}/{}, hrp {:?})",
                    self.p2pkh, self.p2sh, self.hrp
                )
            })
    }
}

/// Networks used to explain a mismatch; several share base58 versions, so a match names all.
const KNOWN_NETWORKS: [(&str, AddressParams); 6] = [
    ("Bitcoin mainnet", AddressParams::BITCOIN),
    ("Bitcoin testnet/signet", AddressParams::TESTNET),
    ("Bitcoin regtest", AddressParams::REGTEST),
    ("Litecoin mainnet", AddressParams::LITECOIN),
    ("Litecoin testnet", AddressParams::LITECOIN_TESTNET),
    ("Dogecoin mainnet", AddressParams::DOGECOIN),
];

/// Other hrps worth recognising in messages. Dogecoin Core's development branch defines
/// `doge`/`tdge`, but segwit is not active on Dogecoin, so those strings are refused.
const EXTRA_HRPS: [(&str, &str); 3] = [
    ("rltc", "Litecoin regtest"),
    ("doge", "Dogecoin mainnet"),
    ("tdge", "Dogecoin testnet"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKind {
    P2pkh,
    P2sh,
    P2wpkh,
    P2wsh,
    P2tr,
    /// Any other native segwit program (v1 with a length other than 32, v2..=16).
    Witness {
        version: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub kind: AddressKind,
    pub script_pubkey: Vec<u8>,
}

/// Why a string is not a payout address for this pool. The messages are shown to miners, so
/// each says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty address: use your wallet's receiving address as the username")]
    Empty,
    #[error("address is for {found}, this pool mines {expected}")]
    WrongNetwork { found: String, expected: String },
    #[error(
        "bad checksum: the address has a typo or is incomplete, copy it again from your wallet"
    )]
    BadChecksum,
    #[error(
        "invalid character {0:?}: addresses use only base58 (no 0, O, I, l) or bech32 characters"
    )]
    InvalidCharacter(char),
    #[error("mixed upper and lower case in a bech32 address: write it all lower case")]
    MixedCase,
    #[error("not a valid address: {0}")]
    Malformed(String),
    #[error(
        "unknown address version byte {version}: {expected} uses {p2pkh} (P2PKH) and {p2sh} (P2SH)"
    )]
    UnknownVersion {
        version: u8,
        expected: String,
        p2pkh: u8,
        p2sh: u8,
    },
    #[error("{network} has no native segwit (bech32) addresses: use a legacy address")]
    SegwitUnsupported { network: String },
}

/// Parses `s` as a payout address of the network described by `params`.
///
/// The string is taken as is: callers strip the worker suffix and surrounding whitespace.
pub fn parse_address(s: &str, params: &AddressParams) -> Result<Address, AddressError> {
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    if let Some(hrp) = bech32_hrp_of(s, params) {
        return parse_segwit(s, &hrp, params);
    }
    match parse_base58(s, params) {
        Err(AddressError::InvalidCharacter(c)) => {
            // Not base58: perhaps a bech32 address of a network we do not list.
            if let Ok(seg) = SegwitHrpstring::new(s) {
                return Err(AddressError::WrongNetwork {
                    found: format!("a network with prefix \"{}1\"", seg.hrp().to_lowercase()),
                    expected: params.network_name(),
                });
            }
            Err(AddressError::InvalidCharacter(c))
        }
        other => other,
    }
}

/// The lower-cased hrp when `s` looks like a bech32 string of this or a known network.
fn bech32_hrp_of(s: &str, params: &AddressParams) -> Option<String> {
    let sep = s.rfind('1')?;
    let hrp = s[..sep].to_ascii_lowercase();
    if hrp.is_empty() {
        return None;
    }
    let known = (!params.hrp.is_empty() && hrp == params.hrp.to_ascii_lowercase())
        || KNOWN_NETWORKS
            .iter()
            .any(|(_, p)| !p.hrp.is_empty() && p.hrp == hrp)
        || EXTRA_HRPS.iter().any(|(h, _)| *h == hrp);
    known.then_some(hrp)
}

fn hrp_network(hrp: &str) -> String {
    KNOWN_NETWORKS
        .iter()
        .find(|(_, p)| p.hrp == hrp)
        .map(|(n, _)| *n)
        .or_else(|| EXTRA_HRPS.iter().find(|(h, _)| *h == hrp).map(|(_, n)| *n))
        .map(str::to_string)
        .unwrap_or_else(|| format!("a network with prefix \"{hrp}1\""))
}

fn parse_segwit(s: &str, hrp: &str, params: &AddressParams) -> Result<Address, AddressError> {
    let seg = SegwitHrpstring::new(s).map_err(segwit_error)?;
    if params.hrp.is_empty() || hrp != params.hrp.to_ascii_lowercase() {
        let found = hrp_network(hrp);
        let expected = params.network_name();
        return Err(if params.hrp.is_empty() && found == expected {
            AddressError::SegwitUnsupported { network: expected }
        } else {
            AddressError::WrongNetwork { found, expected }
        });
    }
    let version = seg.witness_version().to_u8();
    let program: Vec<u8> = seg.byte_iter().collect();
    let kind = match (version, program.len()) {
        (0, 20) => AddressKind::P2wpkh,
        (0, 32) => AddressKind::P2wsh,
        (1, 32) => AddressKind::P2tr,
        (v, _) => AddressKind::Witness { version: v },
    };
    let mut script_pubkey = Vec::with_capacity(2 + program.len());
    script_pubkey.push(if version == 0 {
        opcode::OP_0
    } else {
        opcode::OP_1 + version - 1
    });
    // Programs are 2..=40 bytes (checked by the decoder), so a direct push.
    script_pubkey.push(program.len() as u8);
    script_pubkey.extend_from_slice(&program);
    Ok(Address {
        kind,
        script_pubkey,
    })
}

fn segwit_error(e: SegwitHrpstringError) -> AddressError {
    use SegwitHrpstringError as E;
    match e {
        E::Checksum(ChecksumError::InvalidResidue(_)) => AddressError::BadChecksum,
        E::Unchecked(UncheckedHrpstringError::Char(CharError::MixedCase)) => {
            AddressError::MixedCase
        }
        E::Unchecked(UncheckedHrpstringError::Char(CharError::InvalidChar(c))) => {
            AddressError::InvalidCharacter(c)
        }
        other => AddressError::Malformed(other.to_string()),
    }
}

fn parse_base58(s: &str, params: &AddressParams) -> Result<Address, AddressError> {
    // A base58 address is 25 bytes, 34 or 35 characters; refusing long strings first bounds the
    // work done on untrusted input.
    if s.len() > 64 {
        return Err(AddressError::Malformed(format!(
            "{} characters is too long for an address",
            s.len()
        )));
    }
    let payload = bs58::decode(s)
        .with_check(None)
        .into_vec()
        .map_err(|e| match e {
            bs58::decode::Error::InvalidCharacter { character, .. } => {
                AddressError::InvalidCharacter(character)
            }
            bs58::decode::Error::InvalidChecksum { .. } => AddressError::BadChecksum,
            bs58::decode::Error::NoChecksum => {
                AddressError::Malformed("too short to be an address".into())
            }
            other => AddressError::Malformed(other.to_string()),
        })?;
    if payload.len() != 21 {
        return Err(AddressError::Malformed(format!(
            "decodes to {} bytes, a base58 address has 21",
            payload.len()
        )));
    }
    let version = payload[0];
    let hash = &payload[1..];
    let (kind, script_pubkey) = if version == params.p2pkh {
        let mut s = vec![opcode::OP_DUP, opcode::OP_HASH160, 20];
        s.extend_from_slice(hash);
        s.extend_from_slice(&[opcode::OP_EQUALVERIFY, opcode::OP_CHECKSIG]);
        (AddressKind::P2pkh, s)
    } else if version == params.p2sh {
        let mut s = vec![opcode::OP_HASH160, 20];
        s.extend_from_slice(hash);
        s.push(opcode::OP_EQUAL);
        (AddressKind::P2sh, s)
    } else {
        let found: Vec<&str> = KNOWN_NETWORKS
            .iter()
            .filter(|(_, p)| p.p2pkh == version || p.p2sh == version)
            .map(|(n, _)| *n)
            .collect();
        return Err(if found.is_empty() {
            AddressError::UnknownVersion {
                version,
                expected: params.network_name(),
                p2pkh: params.p2pkh,
                p2sh: params.p2sh,
            }
        } else {
            AddressError::WrongNetwork {
                found: found.join(" or "),
                expected: params.network_name(),
            }
        });
    };
    Ok(Address {
        kind,
        script_pubkey,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mainnet_p2pkh_genesis_address() {
        // The address paid by the genesis coinbase, hash160 62e907b1...
        let a = parse_address(
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
            &AddressParams::BITCOIN,
        )
        .unwrap();
        assert_eq!(a.kind, AddressKind::P2pkh);
        assert_eq!(
            hex::encode(&a.script_pubkey),
            "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac"
        );
    }

    #[test]
    fn network_mismatch_messages() {
        let e = parse_address(
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
            &AddressParams::TESTNET,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "address is for Bitcoin mainnet, this pool mines Bitcoin testnet/signet"
        );
        let e = parse_address(
            "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
            &AddressParams::BITCOIN,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "address is for Bitcoin testnet/signet, this pool mines Bitcoin mainnet"
        );
        let e = parse_address(
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb",
            &AddressParams::BITCOIN,
        )
        .unwrap_err();
        assert_eq!(e, AddressError::BadChecksum);
        assert_eq!(
            parse_address("", &AddressParams::BITCOIN),
            Err(AddressError::Empty)
        );
    }

    #[test]
    fn no_segwit_on_dogecoin() {
        let hrp = bech32::Hrp::parse("doge").unwrap();
        let doge = bech32::segwit::encode(hrp, bech32::segwit::VERSION_0, &[7u8; 20]).unwrap();
        let e = parse_address(&doge, &AddressParams::DOGECOIN).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dogecoin mainnet has no native segwit (bech32) addresses: use a legacy address"
        );
        // The same program on a network with that hrp would be a P2WPKH output.
        let params = AddressParams {
            hrp: "doge".into(),
            ..AddressParams::DOGECOIN
        };
        let a = parse_address(&doge, &params).unwrap();
        assert_eq!(a.kind, AddressKind::P2wpkh);
        assert_eq!(a.script_pubkey[..2], [0x00, 0x14]);
    }
}
