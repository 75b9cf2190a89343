//! A running model: weights, arena, KV state, thread pool and the current position.

use crate::abi::{self, ABI_VERSION, Context, ModelInfo};
use crate::error::Error;
use crate::mem::AlignedBuf;
use crate::pool::{ThreadPool, edgec_parallel_for};
use crate::sample::Sampler;
use crate::weights::{LoadMode, Weights, validate_weights};
use std::path::Path;
use std::sync::Arc;

/// How an app hands its linked model object over: the object's `<name>_info` and
/// `<name>_forward` symbols.
#[derive(Clone, Copy)]
pub struct Model {
    pub info: &'static ModelInfo,
    pub forward: abi::ForwardFn,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// Threads running kernels, the caller's included; 0 = [`crate::pool::default_threads`]
    /// (the fast cores of a big.LITTLE phone, workers pinned to them; at most
    /// [`crate::pool::MAX_AUTO_THREADS`]). Above [`crate::pool::MAX_THREADS`] (1024) is refused.
    pub threads: usize,
    /// How the weights file is brought into memory.
    pub load: LoadMode,
}

/// Why [`Session::generate`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `max_new_tokens` tokens were generated.
    MaxTokens,
    /// The callback returned `false`.
    Callback,
    /// The KV cache is full: the last generated token could not be fed back.
    ContextFull,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// `prompt.len() * vocab` logits, one row per prompt token.
    pub prompt_logits: Vec<f32>,
    /// The generated ids, in order (each was passed to the callback).
    pub tokens: Vec<u32>,
    pub stop: StopReason,
}

/// One conversation with a model. Not `Sync`: one forward at a time (`&mut self`). Several
/// sessions of one model may share its weights ([`Session::with_shared_weights`]) and run on
/// different threads at once: each owns its arena, KV state, thread pool and position.
pub struct Session {
    model: Model,
    // Field order = drop order: the pool's threads end before the memory they could touch.
    pool: ThreadPool,
    weights: Arc<Weights>,
    arena: AlignedBuf,
    state: AlignedBuf,
    pos: u32,
    ids: Vec<i32>,
}

impl Session {
    pub fn new(model: Model, weights_path: &Path, options: SessionOptions) -> Result<Session, Error> {
        Session::check_info(model.info)?;
        check_options(&options)?;
        let weights = Weights::open_with(weights_path, model.info, options.load)?;
        Session::with_weights(model, Arc::new(weights), options)
    }

    /// A session over weights already opened for this model (by [`Weights::open`], or taken
    /// from another session with [`Session::shared_weights`]): one mapping serves every
    /// session, while each has its own arena, KV state and threads. The weights' header is
    /// checked against `model.info` again (magic, ABI version, size, content hash), so weights
    /// of another build are refused; `options.load` does not apply.
    pub fn with_shared_weights(model: Model, weights: Arc<Weights>, options: SessionOptions) -> Result<Session, Error> {
        Session::check_info(model.info)?;
        check_options(&options)?;
        validate_weights(weights.bytes(), model.info, weights.path())?;
        Session::with_weights(model, weights, options)
    }

    /// A session over weights already in memory: the object's embedded image (declared by the
    /// generated header as `NAME_weights`, `info.weights_size` bytes, with `--embed-weights`)
    /// or any `'static` copy of a weights file. The header, size and content hash are checked
    /// exactly as for a file; `options.load` does not apply.
    pub fn from_static(model: Model, weights: &'static [u8], options: SessionOptions) -> Result<Session, Error> {
        Session::check_info(model.info)?;
        check_options(&options)?;
        let weights = Weights::from_static(weights, model.info, "embedded weights")?;
        Session::with_weights(model, Arc::new(weights), options)
    }

    fn with_weights(model: Model, weights: Arc<Weights>, options: SessionOptions) -> Result<Session, Error> {
        let info = model.info;
        let arena = AlignedBuf::zeroed(info.arena_size, "arena")?;
        let state = AlignedBuf::zeroed(info.state_size, "state")?;
        let pool = ThreadPool::new(options.threads)
            .map_err(|e| Error::InvalidArgument(format!("cannot start {} threads: {e}", options.threads)))?;
        Ok(Session { model, pool, weights, arena, state, pos: 0, ids: Vec::new() })
    }

    fn check_info(info: &ModelInfo) -> Result<(), Error> {
        if info.abi_version != ABI_VERSION {
            return Err(Error::AbiVersion { found: info.abi_version, expected: ABI_VERSION });
        }
        if info.vocab == 0 || info.vocab > i32::MAX as u32 {
            return Err(Error::BadModelInfo(format!("vocab {} is not in 1..=2^31-1", info.vocab)));
        }
        if info.max_tokens == 0 {
            return Err(Error::BadModelInfo("max_tokens is 0".into()));
        }
        if info.max_context == 0 {
            return Err(Error::BadModelInfo("max_context is 0".into()));
        }
        Ok(())
    }

    pub fn info(&self) -> &'static ModelInfo {
        self.model.info
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The weights as a shared handle, to open another session over the same mapping
    /// ([`Session::with_shared_weights`]).
    pub fn shared_weights(&self) -> &Arc<Weights> {
        &self.weights
    }

    /// Threads taking part in parallel regions, the caller's included.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The number of tokens in the KV cache: where the next token goes.
    pub fn position(&self) -> u32 {
        self.pos
    }

    /// Forgets the conversation: position 0, state zeroed.
    pub fn reset(&mut self) {
        self.state.zero();
        self.pos = 0;
    }

    /// Checks ids and context room for `ids` at the current position.
    fn check(&self, ids: &[u32]) -> Result<(), Error> {
        let info = self.model.info;
        if let Some((index, &id)) = ids.iter().enumerate().find(|&(_, &id)| id >= info.vocab) {
            return Err(Error::TokenOutOfRange { id: i64::from(id), index, vocab: info.vocab });
        }
        if self.pos as u64 + ids.len() as u64 > info.max_context as u64 {
            return Err(Error::ContextOverflow {
                position: self.pos,
                tokens: ids.len(),
                max_context: info.max_context,
            });
        }
        Ok(())
    }

    /// Runs `ids` at the current position (in chunks of at most `max_tokens`) and advances it.
    /// `logits` is replaced by `ids.len() * vocab` floats, one row per token. Ids and context
    /// room are checked before the object is called; if the object fails on a later chunk, the
    /// chunks before it stay in the cache (the position says how many).
    pub fn forward(&mut self, ids: &[u32], logits: &mut Vec<f32>) -> Result<(), Error> {
        self.check(ids)?;
        let vocab = self.model.info.vocab as usize;
        let total = ids
            .len()
            .checked_mul(vocab)
            .ok_or_else(|| Error::InvalidArgument(format!("{} tokens x vocab {vocab} logits overflow", ids.len())))?;
        logits.clear();
        logits.resize(total, 0.0);
        self.ids.clear();
        self.ids.extend(ids.iter().map(|&i| i as i32)); // < vocab <= i32::MAX
        let max = self.model.info.max_tokens as usize;
        let mut done = 0;
        while done < ids.len() {
            let n = (ids.len() - done).min(max);
            let ctx = Context {
                weights: self.weights.as_ptr(),
                arena: self.arena.as_mut_ptr(),
                state: self.state.as_mut_ptr(),
                pool: self.pool.as_context_ptr(),
                parallel_for: edgec_parallel_for,
            };
            // SAFETY: the ABI contract: ctx points to live, aligned buffers of the sizes the
            // object was compiled for; ids and logits hold n and n*vocab elements; the ids are
            // below vocab and pos + n <= max_context (checked above).
            let status = unsafe {
                (self.model.forward)(
                    &ctx,
                    self.ids.as_ptr().add(done),
                    n as u32,
                    self.pos,
                    logits.as_mut_ptr().add(done * vocab),
                )
            };
            if status != abi::STATUS_OK {
                return Err(Error::ModelStatus { status, position: self.pos, tokens: n as u32 });
            }
            self.pos += n as u32;
            done += n;
        }
        Ok(())
    }

    /// Prefills `prompt` at the current position, then decodes up to `max_new_tokens` tokens
    /// one at a time through the KV cache, each chosen by `sampler` and passed to `on_token`
    /// (return `false` to stop). The last generated token is not fed back (its logits are not
    /// needed), so the position ends at `start + prompt.len() + tokens.len() - 1` when at
    /// least one token was generated. The prompt must fit the context; generation stops early
    /// ([`StopReason::ContextFull`]) when the cache fills up.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_new_tokens: usize,
        sampler: &mut Sampler,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<Generation, Error> {
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let vocab = self.model.info.vocab as usize;
        let mut prompt_logits = Vec::new();
        self.forward(prompt, &mut prompt_logits)?;
        let mut tokens = Vec::with_capacity(max_new_tokens.min(1 << 16));
        let mut step = Vec::with_capacity(vocab);
        let mut stop = StopReason::MaxTokens;
        let mut row: &[f32] = &prompt_logits[prompt_logits.len() - vocab..];
        for i in 0..max_new_tokens {
            let tok = sampler.sample(row);
            tokens.push(tok);
            if !on_token(tok) {
                stop = StopReason::Callback;
                break;
            }
            if i + 1 == max_new_tokens {
                break;
            }
            if self.pos >= self.model.info.max_context {
                stop = StopReason::ContextFull;
                break;
            }
            self.forward(&[tok], &mut step)?;
            row = &step;
        }
        Ok(Generation { prompt_logits, tokens, stop })
    }
}

/// Options checked before anything is opened or allocated.
fn check_options(options: &SessionOptions) -> Result<(), Error> {
    crate::pool::check_threads(options.threads).map_err(Error::InvalidArgument)
}
