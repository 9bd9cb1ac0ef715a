//! Hash slots of commands, and pipelines that span several of them on a
//! Redis Cluster.
//!
//! Every multi-key command and script of tickmesh stays inside one hash slot
//! (keys are hash-tagged per entity). A pipeline is different: it is only a
//! way to save round trips, and requests that span entities (GetQuotes for
//! 2,500 symbols, a batch of trades over many symbols) pipeline commands of
//! many slots. On a cluster such a pipeline is split by slot, the parts are
//! sent concurrently (each to its slot's master, over the cluster
//! connection's multiplexed node connections), and the answers are put back
//! in request order. A command without a key (WAIT, WAITAOF) goes with the
//! command before it, so it runs on the node that took that write.

use std::collections::HashMap;

use futures_util::future::try_join_all;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Arg, Cmd, Pipeline, RedisResult, Value};

/// The hash slot of the command's first key, or `None` for a command without one.
pub fn command_slot(cmd: &Cmd) -> Option<Slot> {
    command_key(cmd).map(Slot::for_key)
}

/// The first key a command names, by the command's key specification for the
/// commands tickmesh sends.
pub fn command_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            args.next()?;
            let keys: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
            if keys == 0 {
                return None;
            }
            args.next()
        }
        b"XREAD" | b"XREADGROUP" => {
            let mut args = args.skip_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"));
            args.next()?;
            args.next()
        }
        b"WAIT" | b"WAITAOF" | b"PING" | b"ECHO" | b"INFO" | b"SCRIPT" | b"TIME" | b"MULTI"
        | b"EXEC" | b"DISCARD" | b"CLUSTER" | b"CONFIG" | b"DBSIZE" | b"FLUSHALL" | b"FLUSHDB"
        | b"SCAN" | b"KEYS" | b"CLIENT" | b"COMMAND" | b"ROLE" | b"LASTSAVE" | b"READONLY"
        | b"READWRITE" | b"HELLO" | b"AUTH" | b"SELECT" | b"FUNCTION" | b"RANDOMKEY" => None,
        _ => args.next(),
    }
}

/// Sends a non-transactional pipeline to a cluster: as it is when all its
/// keyed commands share one slot, else split by slot and sent concurrently,
/// with the answers in request order.
pub async fn split_pipeline(
    conn: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let groups = group_by_slot(pipeline);
    if groups.len() <= 1 {
        return conn.req_packed_commands(pipeline, offset, count).await;
    }
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let parts = groups.iter().map(|indices| {
        let mut part = Pipeline::with_capacity(indices.len());
        for &i in indices {
            part.add_command(commands[i].clone());
        }
        let mut conn = conn.clone();
        async move {
            let n = part.len();
            conn.req_packed_commands(&part, 0, n).await
        }
    });
    let answers = try_join_all(parts).await?;
    let mut ordered: Vec<Option<Value>> = vec![None; commands.len()];
    for (indices, values) in groups.iter().zip(answers) {
        for (&i, value) in indices.iter().zip(values) {
            ordered[i] = Some(value);
        }
    }
    let all: Vec<Value> = ordered
        .into_iter()
        .map(|v| v.unwrap_or(Value::Nil))
        .collect();
    Ok(all.into_iter().skip(offset).take(count).collect())
}

/// The pipeline's command indices per slot, in order of first appearance;
/// keyless commands join the group of the keyed command before them (or the
/// first group when none comes before).
pub fn group_by_slot(pipeline: &Pipeline) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_slot: HashMap<Slot, usize> = HashMap::new();
    let mut leading_keyless = Vec::new();
    let mut current: Option<usize> = None;
    for (i, cmd) in pipeline.cmd_iter().enumerate() {
        match command_slot(cmd) {
            Some(slot) => {
                let g = *by_slot.entry(slot).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[g].push(i);
                current = Some(g);
            }
            None => match current {
                Some(g) => groups[g].push(i),
                None => leading_keyless.push(i),
            },
        }
    }
    if !leading_keyless.is_empty() {
        match groups.first_mut() {
            Some(first) => {
                leading_keyless.append(first);
                *first = leading_keyless;
            }
            None => groups.push(leading_keyless),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_by_command_shape() {
        let get = redis::cmd("GET").arg("tm:q:{A}").clone();
        assert_eq!(command_key(&get), Some(&b"tm:q:{A}"[..]));
        let eval = redis::cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg("k1")
            .arg("k2")
            .clone();
        assert_eq!(command_key(&eval), Some(&b"k1"[..]));
        let keyless_eval = redis::cmd("EVALSHA").arg("abc").arg(0).clone();
        assert_eq!(command_key(&keyless_eval), None);
        let xread = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(10)
            .arg("BLOCK")
            .arg(5)
            .arg("STREAMS")
            .arg("s1")
            .arg("0-0")
            .clone();
        assert_eq!(command_key(&xread), Some(&b"s1"[..]));
        assert_eq!(
            command_key(&redis::cmd("WAIT").arg(1).arg(100).clone()),
            None
        );
    }

    #[test]
    fn a_pipeline_splits_by_slot_and_a_wait_follows_its_write() {
        let mut p = redis::pipe();
        p.cmd("WAITAOF").arg(1).arg(0).arg(10); // leading keyless
        p.cmd("SET").arg("{a}x").arg(1);
        p.cmd("SET").arg("{b}x").arg(1);
        p.cmd("WAIT").arg(1).arg(10);
        p.cmd("GET").arg("{a}y");
        let groups = group_by_slot(&p);
        assert_eq!(groups, vec![vec![0, 1, 4], vec![2, 3]]);
        let mut one = redis::pipe();
        one.cmd("GET").arg("{a}1").cmd("GET").arg("{a}2");
        assert_eq!(group_by_slot(&one).len(), 1);
    }
}
