//! Data-parallel training across processes: a small TCP process group.
//!
//! Rank 0 listens; every other rank connects to it and introduces itself. Collectives go
//! through rank 0, which combines contributions in rank order, so every rank receives
//! bit-identical results and the run does not depend on message timing. Processes find each
//! other through the environment that `mpirun` sets (`OMPI_COMM_WORLD_RANK`/`_SIZE`, or
//! `PMI_RANK`/`PMI_SIZE`) or through `IDDPM_RANK`/`IDDPM_WORLD_SIZE`, and meet at
//! `IDDPM_MASTER_ADDR` (default `127.0.0.1:29500`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{Result, TrainError};

const MAGIC: u64 = 0x6964_6470_6d5f_7067; // "iddpm_pg"

/// Where rank 0 listens unless `IDDPM_MASTER_ADDR` says otherwise.
pub const DEFAULT_MASTER_ADDR: &str = "127.0.0.1:29500";

/// This process's place in a data-parallel run.
pub struct ProcessGroup {
    rank: usize,
    world_size: usize,
    /// Rank 0: one stream per other rank, in rank order. Other ranks: the stream to rank 0.
    links: Vec<TcpStream>,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessGroup(rank {} of {})", self.rank, self.world_size)
    }
}

fn comm_err(what: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::Other(format!("distributed training: {what}: {e}"))
}

fn send(stream: &mut TcpStream, bytes: &[u8]) -> Result<()> {
    stream
        .write_all(&(bytes.len() as u64).to_le_bytes())
        .and_then(|_| stream.write_all(bytes))
        .map_err(|e| comm_err("sending to a peer failed (did another rank exit?)", e))
}

fn recv(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut len = [0u8; 8];
    stream
        .read_exact(&mut len)
        .map_err(|e| comm_err("a peer closed the connection (did another rank exit?)", e))?;
    let mut buf = vec![0u8; u64::from_le_bytes(len) as usize];
    stream
        .read_exact(&mut buf)
        .map_err(|e| comm_err("receiving from a peer failed", e))?;
    Ok(buf)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_from(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn env_usize(names: &[&str]) -> Option<(String, usize)> {
    names.iter().find_map(|n| {
        let v = std::env::var(n).ok()?;
        Some((format!("{n}={v}"), v.trim().parse().ok()?))
    })
}

impl ProcessGroup {
    /// A group of one: every collective is the identity.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            links: Vec::new(),
        }
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of processes.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Whether this process writes logs and checkpoints.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Rank and world size from the environment (`IDDPM_*`, Open MPI's or PMI's variables),
    /// if any are set.
    pub fn env_rank_and_size() -> Result<Option<(usize, usize)>> {
        let rank = env_usize(&["IDDPM_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"]);
        let size = env_usize(&["IDDPM_WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]);
        match (rank, size) {
            (None, None) => Ok(None),
            (Some((_, r)), Some((_, s))) => Ok(Some((r, s))),
            (Some((v, _)), None) | (None, Some((v, _))) => Err(TrainError::Config(format!(
                "{v} is set but the matching rank/world-size variable is not"
            ))),
        }
    }

    /// The rendezvous address: `IDDPM_MASTER_ADDR`, else [`DEFAULT_MASTER_ADDR`].
    pub fn env_master_addr() -> String {
        std::env::var("IDDPM_MASTER_ADDR").unwrap_or_else(|_| DEFAULT_MASTER_ADDR.to_string())
    }

    /// Joins a group of `world_size` processes meeting at `addr` (`host:port`). Rank 0 binds
    /// the address and waits for the others; the others retry until rank 0 is up. Gives up
    /// after `timeout`.
    pub fn connect(rank: usize, world_size: usize, addr: &str, timeout: Duration) -> Result<Self> {
        if world_size == 0 || rank >= world_size {
            return Err(TrainError::Config(format!(
                "rank {rank} does not exist in a world of {world_size} processes"
            )));
        }
        if world_size == 1 {
            return Ok(Self::single());
        }
        let deadline = Instant::now() + timeout;
        let links = if rank == 0 {
            let listener = TcpListener::bind(addr)
                .map_err(|e| comm_err(&format!("rank 0 cannot listen on {addr}"), e))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| comm_err("listener", e))?;
            let mut slots: Vec<Option<TcpStream>> = (1..world_size).map(|_| None).collect();
            while slots.iter().any(Option::is_none) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false)
                            .map_err(|e| comm_err("accept", e))?;
                        s.set_nodelay(true).ok();
                        let hello = recv(&mut s)?;
                        let words: Vec<u64> = hello
                            .chunks_exact(8)
                            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                            .collect();
                        match words.as_slice() {
                            [m, r, w] if *m == MAGIC && *w as usize == world_size => {
                                let r = *r as usize;
                                if r == 0 || r >= world_size || slots[r - 1].is_some() {
                                    return Err(comm_err(
                                        "handshake",
                                        format!("rank {r} joined twice or does not exist"),
                                    ));
                                }
                                slots[r - 1] = Some(s);
                            }
                            _ => {
                                return Err(comm_err(
                                    "handshake",
                                    "a peer with a different --world_size or program connected",
                                ));
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            let missing: Vec<String> = slots
                                .iter()
                                .enumerate()
                                .filter(|(_, s)| s.is_none())
                                .map(|(i, _)| (i + 1).to_string())
                                .collect();
                            return Err(comm_err(
                                &format!("waiting on {addr}"),
                                format!("ranks {} never connected", missing.join(", ")),
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(comm_err("accept", e)),
                }
            }
            slots.into_iter().map(|s| s.expect("all joined")).collect()
        } else {
            let mut stream = loop {
                match TcpStream::connect(addr) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => {
                        return Err(comm_err(
                            &format!("rank {rank} cannot reach rank 0 at {addr}"),
                            e,
                        ));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            stream.set_nodelay(true).ok();
            let hello: Vec<u8> = [MAGIC, rank as u64, world_size as u64]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            send(&mut stream, &hello)?;
            vec![stream]
        };
        let mut group = Self {
            rank,
            world_size,
            links,
        };
        group.barrier()?;
        Ok(group)
    }

    /// Sums `data` over all ranks, in rank order, and gives every rank the result.
    pub fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<()> {
        if self.world_size == 1 {
            return Ok(());
        }
        if self.rank == 0 {
            for link in &mut self.links {
                let other = f32_from(&recv(link)?);
                if other.len() != data.len() {
                    return Err(comm_err(
                        "all-reduce",
                        format!(
                            "ranks disagree on sizes ({} vs {})",
                            other.len(),
                            data.len()
                        ),
                    ));
                }
                for (a, b) in data.iter_mut().zip(other) {
                    *a += b;
                }
            }
            let bytes = f32_bytes(data);
            for link in &mut self.links {
                send(link, &bytes)?;
            }
        } else {
            send(&mut self.links[0], &f32_bytes(data))?;
            let sum = f32_from(&recv(&mut self.links[0])?);
            if sum.len() != data.len() {
                return Err(comm_err(
                    "all-reduce",
                    "rank 0 sent a result of another size",
                ));
            }
            data.copy_from_slice(&sum);
        }
        Ok(())
    }

    /// Concatenates every rank's `local` values in rank order, on every rank.
    pub fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>> {
        if self.world_size == 1 {
            return Ok(local.to_vec());
        }
        if self.rank == 0 {
            let mut all = local.to_vec();
            for link in &mut self.links {
                all.extend(f32_from(&recv(link)?));
            }
            let bytes = f32_bytes(&all);
            for link in &mut self.links {
                send(link, &bytes)?;
            }
            Ok(all)
        } else {
            send(&mut self.links[0], &f32_bytes(local))?;
            Ok(f32_from(&recv(&mut self.links[0])?))
        }
    }

    /// Collects every rank's bytes on rank 0, in rank order; the other ranks get `None`.
    pub fn gather_bytes(&mut self, local: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        if self.rank == 0 {
            let mut all = vec![local.to_vec()];
            for link in &mut self.links {
                all.push(recv(link)?);
            }
            Ok(Some(all))
        } else {
            send(&mut self.links[0], local)?;
            Ok(None)
        }
    }

    /// Gives every rank rank 0's `data` (same length everywhere).
    pub fn broadcast(&mut self, data: &mut [f32]) -> Result<()> {
        if self.world_size == 1 {
            return Ok(());
        }
        if self.rank == 0 {
            let bytes = f32_bytes(data);
            for link in &mut self.links {
                send(link, &bytes)?;
            }
        } else {
            let got = f32_from(&recv(&mut self.links[0])?);
            if got.len() != data.len() {
                return Err(comm_err(
                    "broadcast",
                    format!(
                        "rank 0 has {} values here, this rank {} (are the flags the same?)",
                        got.len(),
                        data.len()
                    ),
                ));
            }
            data.copy_from_slice(&got);
        }
        Ok(())
    }

    /// Waits until every rank gets here.
    pub fn barrier(&mut self) -> Result<()> {
        self.all_reduce_sum(&mut [0.0]).map(|_| ())
    }

    /// Whether any rank asks to stop (so that all stop at the same step).
    pub fn any(&mut self, local: bool) -> Result<bool> {
        let mut flag = [f32::from(u8::from(local))];
        self.all_reduce_sum(&mut flag)?;
        Ok(flag[0] > 0.0)
    }
}
