//! CBC mode with an explicit per-packet IV (NIST SP 800-38A §6.2), generic over the block cipher:
//! the one implementation behind `aes128-cbc` (`super::aes128_cbc`) and `3des-cbc`
//! (`super::tdes_cbc`).
//!
//! Each algorithm file only names its block cipher, key length and key rules in a [`CbcSpec`];
//! the code is monomorphised per cipher, so the generic costs nothing at run time. The IV is one
//! block and the data whole blocks (RFC 3602 §3, RFC 2451 §3).
//!
//! Why encryption does not use `cbc::Encryptor`: it keeps the chaining value behind a `&mut` to
//! its own field, so each block stores it and the next block loads it back. CBC encryption is
//! one serial chain of block-cipher rounds, and that store-to-load round trip sits on it: with
//! AES-NI it cost about a third of the throughput (1.0 GB/s against OpenSSL's 1.35 GB/s on the
//! same core). Here the chaining value is a local, so it stays in a register. Decryption is
//! parallel across blocks and the `cbc` crate's pipelined version is already fast, so it is
//! still used for that.

use super::{Cipher, CipherLengthError, ConfigError};
use aes::cipher::array::{Array, ArraySize};
use aes::cipher::typenum::Unsigned;
use aes::cipher::{
    BlockCipherDecrypt, BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt,
    BlockModeDecrypt, BlockSizeUser, InnerIvInit, KeyInit,
};
use std::fmt;
use std::marker::PhantomData;
use zeroize::ZeroizeOnDrop;

/// What distinguishes one CBC cipher from another.
pub trait CbcSpec: Send + Sync + 'static {
    /// The block cipher, e.g. `aes::Aes128`. Its `zeroize` feature must wipe the key schedule on
    /// drop: [`CbcCipher`] claims `ZeroizeOnDrop` on that ground.
    type Block: BlockCipherEncrypt + BlockCipherDecrypt + KeyInit + Send + Sync;
    /// The model name (`aes128-cbc`, `3des-cbc`), for messages.
    const NAME: &'static str;
    /// The Rust type name printed by `Debug` (`Aes128Cbc`), never the key.
    const DEBUG_NAME: &'static str;
    /// The exact key length the spec requires.
    const KEY_LEN: usize;

    /// Rules a key of the right length must also pass (none by default).
    ///
    /// # Errors
    /// The [`ConfigError`] that names the broken rule.
    fn check_key(key: &[u8]) -> Result<(), ConfigError> {
        let _ = key;
        Ok(())
    }
}

/// A CBC cipher keyed for one SA: the key schedule is computed once and only borrowed per packet.
pub struct CbcCipher<S: CbcSpec> {
    block: S::Block,
    spec: PhantomData<S>,
}

impl<S: CbcSpec> CbcCipher<S> {
    /// Key length required by the algorithm.
    pub const KEY_LEN: usize = S::KEY_LEN;
    /// The block size, which is also the IV size.
    const BLOCK: usize = <S::Block as BlockSizeUser>::BlockSize::USIZE;

    /// Schedules `key`, which must be exactly [`Self::KEY_LEN`] bytes and pass the algorithm's
    /// own rules ([`CbcSpec::check_key`]).
    ///
    /// # Errors
    /// [`ConfigError::Length`] for a key of another length, or what [`CbcSpec::check_key`] says.
    pub fn new(key: &[u8]) -> Result<Self, ConfigError> {
        let length = || ConfigError::Length {
            algorithm: S::NAME,
            expected: S::KEY_LEN,
            got: key.len(),
        };
        if key.len() != S::KEY_LEN {
            return Err(length());
        }
        S::check_key(key)?;
        let block = S::Block::new_from_slice(key).map_err(|_| length())?;
        Ok(Self {
            block,
            spec: PhantomData,
        })
    }

    fn length_error(iv: &[u8], buf: &[u8]) -> CipherLengthError {
        CipherLengthError {
            len: buf.len(),
            iv_len: iv.len(),
            block_size: Self::BLOCK,
        }
    }

    /// The IV is one block and the data whole blocks.
    fn check_lengths(iv: &[u8], buf: &[u8]) -> Result<(), CipherLengthError> {
        if iv.len() == Self::BLOCK && buf.len().is_multiple_of(Self::BLOCK) {
            Ok(())
        } else {
            Err(Self::length_error(iv, buf))
        }
    }
}

/// Prints the algorithm, never the key schedule.
impl<S: CbcSpec> fmt::Debug for CbcCipher<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::debug_redacted(f, S::DEBUG_NAME)
    }
}

// The block cipher crate wipes its key schedule on drop (its `zeroize` feature, see
// `CbcSpec::Block`).
impl<S: CbcSpec> ZeroizeOnDrop for CbcCipher<S> {}

impl<S: CbcSpec> Cipher for CbcCipher<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn block_size(&self) -> usize {
        Self::BLOCK
    }

    fn iv_len(&self) -> usize {
        Self::BLOCK
    }

    fn encrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CipherLengthError> {
        Self::check_lengths(iv, buf)?;
        // The length check above makes the conversion infallible and the tail empty.
        let iv = <&Array<u8, _>>::try_from(iv).map_err(|_| Self::length_error(iv, buf))?;
        let (blocks, _) = Array::slice_as_chunks_mut(buf);
        self.block.encrypt_with_backend(Chain {
            iv: iv.clone(),
            blocks,
        });
        Ok(())
    }

    fn decrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CipherLengthError> {
        Self::check_lengths(iv, buf)?;
        let mode = cbc::Decryptor::<&S::Block>::inner_iv_slice_init(&self.block, iv);
        // The length check above makes this infallible and the tail empty.
        let mut mode = mode.map_err(|_| Self::length_error(iv, buf))?;
        let (blocks, _) = Array::slice_as_chunks_mut(buf);
        // CBC decryption is parallel across blocks; the `cbc` crate hands the backend several
        // blocks at once (pipelined AES-NI).
        mode.decrypt_blocks(blocks);
        Ok(())
    }
}

/// The CBC encryption loop as a closure over whichever backend (AES-NI, VAES, software) the
/// cipher picked at run time; it is monomorphised into that backend's `target_feature` function.
struct Chain<'a, BS: ArraySize> {
    iv: Array<u8, BS>,
    blocks: &'a mut [Array<u8, BS>],
}

impl<BS: ArraySize> BlockSizeUser for Chain<'_, BS> {
    type BlockSize = BS;
}

impl<BS: ArraySize> BlockCipherEncClosure for Chain<'_, BS> {
    #[allow(
        clippy::inline_always,
        reason = "it must inline into the backend's `target_feature` function, or each block pays a call"
    )]
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = BS>>(self, backend: &B) {
        let mut chain = self.iv;
        for block in self.blocks.iter_mut() {
            // C_i = E_K(P_i xor C_{i-1}), C_0 = IV.
            let mut t = block.clone();
            for (a, b) in t.iter_mut().zip(chain.iter()) {
                *a ^= *b;
            }
            backend.encrypt_block((&mut t).into());
            block.clone_from(&t);
            chain = t;
        }
    }
}
