//! The stack machine that runs a pickle's opcodes into a [`Value`] tree, within [`Limits`].

use std::collections::HashMap;

use super::opcode::{Family, Opcode};
use super::torch_globals::{call, global, new_object, persistent_storage};
use super::{Limits, Value, describe};

/// A value under construction, in the machine's arena. Containers refer to their children
/// by [`NodeId`], so the memo shares values as Python does: fetching an entry twice costs
/// nothing, and items added to a memoised list are seen through every reference.
enum Node {
    /// A value without children.
    Leaf(Value),
    Tuple(Vec<NodeId>),
    List(Vec<NodeId>),
    Dict(Vec<(NodeId, NodeId)>),
    /// A TorchScript object or NumPy array; BUILD sets its state.
    Object {
        class: String,
        state: Option<NodeId>,
    },
}

/// An index into the machine's arena.
type NodeId = usize;

enum Slot {
    Node(NodeId),
    Mark,
}

pub(super) struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    arena: Vec<Node>,
    stack: Vec<Slot>,
    memo: HashMap<u32, NodeId>,
    limits: Limits,
    /// What turning nodes into [`Value`]s has cost so far (see [`Machine::materialise`]).
    spent: usize,
}

impl<'a> Machine<'a> {
    pub(super) fn new(bytes: &'a [u8], limits: Limits) -> Self {
        Self {
            bytes,
            pos: 0,
            arena: Vec::new(),
            stack: Vec::new(),
            memo: HashMap::new(),
            limits,
            spent: 0,
        }
    }

    /// Runs the opcodes until STOP and returns the value left on the stack.
    pub(super) fn run(mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let byte = self.u8()?;
            let op = Opcode::from_byte(byte)
                .ok_or_else(|| format!("unsupported pickle opcode 0x{byte:02x} at byte {at}"))?;
            match op.family() {
                Family::Framing => {
                    if self.framing_op(op)? {
                        let root = self.pop()?;
                        return self.materialise(root, 1);
                    }
                }
                Family::Scalar => self.scalar_op(op)?,
                Family::Text => self.text_op(op)?,
                Family::Container => self.container_op(op)?,
                Family::Memo => self.memo_op(op)?,
                Family::Object => self.object_op(op)?,
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A length or memo key: one byte for the short forms, else four (little-endian).
    fn operand(&mut self, op: Opcode) -> Result<usize, String> {
        Ok(if op.has_short_operand() {
            self.u8()? as usize
        } else {
            u32::from_le_bytes(self.array()?) as usize
        })
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated text line in pickle")?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }

    /// Adds `node` to the arena and pushes it.
    fn push(&mut self, node: Node) {
        self.arena.push(node);
        self.stack.push(Slot::Node(self.arena.len() - 1));
    }

    fn push_leaf(&mut self, value: Value) {
        self.push(Node::Leaf(value));
    }

    fn pop(&mut self) -> Result<NodeId, String> {
        match self.stack.pop() {
            Some(Slot::Node(id)) => Ok(id),
            Some(Slot::Mark) => Err("unexpected MARK on the pickle stack".into()),
            None => Err("pickle stack underflow".into()),
        }
    }

    fn top(&self) -> Result<NodeId, String> {
        match self.stack.last() {
            Some(Slot::Node(id)) => Ok(*id),
            _ => Err("pickle stack underflow".into()),
        }
    }

    /// Pops the nodes above the last MARK (in pushed order) and the MARK.
    fn pop_to_mark(&mut self) -> Result<Vec<NodeId>, String> {
        let mark = self
            .stack
            .iter()
            .rposition(|slot| matches!(slot, Slot::Mark))
            .ok_or("MARK missing on the pickle stack")?;
        let ids = self.stack[mark + 1..]
            .iter()
            .filter_map(|slot| match slot {
                Slot::Node(id) => Some(*id),
                Slot::Mark => None,
            })
            .collect();
        self.stack.truncate(mark);
        Ok(ids)
    }

    /// Turns node `id` into a [`Value`] at nesting level `depth`. Shared nodes are copied, so
    /// every node and byte is charged to the budget; the depth limit ends cycles and bounds the
    /// recursion of whoever later drops or prints the result.
    fn materialise(&mut self, id: NodeId, depth: u32) -> Result<Value, String> {
        if depth > self.limits.max_depth {
            return Err(format!(
                "pickle nests values more than {} levels deep (the reader's limit)",
                self.limits.max_depth
            ));
        }
        let own_bytes = match &self.arena[id] {
            Node::Leaf(Value::Str(s)) => s.len(),
            Node::Leaf(Value::Bytes(b)) => b.len(),
            Node::Object { class, .. } => class.len(),
            _ => 0,
        };
        let cost = std::mem::size_of::<Value>() + own_bytes;
        self.spent = self.spent.saturating_add(cost);
        if self.spent > self.limits.value_budget {
            return Err(format!(
                "pickle builds values beyond the reader's budget of {} bytes, e.g. by fetching \
                 shared values many times",
                self.limits.value_budget
            ));
        }
        Ok(match &self.arena[id] {
            Node::Leaf(v) => v.clone(),
            Node::Tuple(ids) => Value::Tuple(self.materialise_all(&ids.clone(), depth)?),
            Node::List(ids) => Value::List(self.materialise_all(&ids.clone(), depth)?),
            Node::Dict(pairs) => {
                let pairs = pairs.clone();
                let mut out = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    let k = self.materialise(k, depth + 1)?;
                    out.push((k, self.materialise(v, depth + 1)?));
                }
                Value::Dict(out)
            }
            Node::Object { class, state } => {
                let (class, state) = (class.clone(), *state);
                let state = match state {
                    Some(s) => self.materialise(s, depth + 1)?,
                    None => Value::None,
                };
                Value::Object {
                    class,
                    state: Box::new(state),
                }
            }
        })
    }

    fn materialise_all(&mut self, ids: &[NodeId], depth: u32) -> Result<Vec<Value>, String> {
        ids.iter()
            .map(|&id| self.materialise(id, depth + 1))
            .collect()
    }

    /// Adds a [`Value`] (a call's result, which the depth limit already bounds) to the arena,
    /// so that later opcodes can add items to its containers, and pushes it.
    fn push_value(&mut self, value: Value) {
        let id = self.insert_value(value);
        self.stack.push(Slot::Node(id));
    }

    fn insert_value(&mut self, value: Value) -> NodeId {
        let node = match value {
            Value::Tuple(items) => Node::Tuple(self.insert_all(items)),
            Value::List(items) => Node::List(self.insert_all(items)),
            Value::Dict(pairs) => Node::Dict(
                pairs
                    .into_iter()
                    .map(|(k, v)| (self.insert_value(k), self.insert_value(v)))
                    .collect(),
            ),
            Value::Object { class, state } => Node::Object {
                class,
                state: match *state {
                    Value::None => None,
                    s => Some(self.insert_value(s)),
                },
            },
            leaf => Node::Leaf(leaf),
        };
        self.arena.push(node);
        self.arena.len() - 1
    }

    fn insert_all(&mut self, items: Vec<Value>) -> Vec<NodeId> {
        items.into_iter().map(|v| self.insert_value(v)).collect()
    }

    /// PROTO and FRAME are read past; returns whether `op` is STOP.
    fn framing_op(&mut self, op: Opcode) -> Result<bool, String> {
        match op {
            Opcode::Proto => {
                self.u8()?;
            }
            Opcode::Frame => {
                self.take(8)?;
            }
            Opcode::Stop => return Ok(true),
            _ => unreachable!("{op:?} is not a framing opcode"),
        }
        Ok(false)
    }

    /// MARK and the constants: None, booleans, integers, floats.
    fn scalar_op(&mut self, op: Opcode) -> Result<(), String> {
        let value = match op {
            Opcode::Mark => {
                self.stack.push(Slot::Mark);
                return Ok(());
            }
            Opcode::None => Value::None,
            Opcode::NewTrue => Value::Bool(true),
            Opcode::NewFalse => Value::Bool(false),
            Opcode::BinInt => Value::Int(i32::from_le_bytes(self.array()?) as i64),
            Opcode::BinInt1 => Value::Int(self.u8()? as i64),
            Opcode::BinInt2 => Value::Int(u16::from_le_bytes(self.array()?) as i64),
            Opcode::Long1 => {
                let n = self.u8()? as usize;
                Value::Int(twos_complement(self.take(n)?)?)
            }
            Opcode::BinFloat => Value::Float(f64::from_be_bytes(self.array()?)),
            _ => unreachable!("{op:?} is not a scalar opcode"),
        };
        self.push_leaf(value);
        Ok(())
    }

    /// Strings (UTF-8) and byte strings; the short forms have a 1-byte length.
    fn text_op(&mut self, op: Opcode) -> Result<(), String> {
        let n = self.operand(op)?;
        let bytes = self.take(n)?;
        let value = match op {
            Opcode::BinUnicode | Opcode::ShortBinUnicode => {
                Value::Str(String::from_utf8_lossy(bytes).into_owned())
            }
            // BINSTRING and SHORT_BINSTRING are Python 2 `str`: raw bytes such as array data.
            _ => Value::Bytes(bytes.to_vec()),
        };
        self.push_leaf(value);
        Ok(())
    }

    /// Tuples, lists and dicts: empty ones, from a MARK or the stack, and items added to them.
    fn container_op(&mut self, op: Opcode) -> Result<(), String> {
        match op {
            Opcode::EmptyTuple => self.push(Node::Tuple(Vec::new())),
            Opcode::EmptyList => self.push(Node::List(Vec::new())),
            Opcode::EmptyDict => self.push(Node::Dict(Vec::new())),
            Opcode::Tuple => {
                let ids = self.pop_to_mark()?;
                self.push(Node::Tuple(ids));
            }
            Opcode::List => {
                let ids = self.pop_to_mark()?;
                self.push(Node::List(ids));
            }
            Opcode::Dict => {
                let ids = self.pop_to_mark()?;
                self.push(Node::Dict(pairs(&ids)?));
            }
            Opcode::Tuple1 | Opcode::Tuple2 | Opcode::Tuple3 => {
                let n = match op {
                    Opcode::Tuple1 => 1,
                    Opcode::Tuple2 => 2,
                    _ => 3,
                };
                let mut ids = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>, _>>()?;
                ids.reverse();
                self.push(Node::Tuple(ids));
            }
            Opcode::Append => {
                let item = self.pop()?;
                self.append(vec![item])?;
            }
            Opcode::Appends => {
                let items = self.pop_to_mark()?;
                self.append(items)?;
            }
            Opcode::SetItem => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![(k, v)])?;
            }
            Opcode::SetItems => {
                let ids = self.pop_to_mark()?;
                self.set_items(pairs(&ids)?)?;
            }
            _ => unreachable!("{op:?} is not a container opcode"),
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<NodeId>) -> Result<(), String> {
        let top = self.top()?;
        match &mut self.arena[top] {
            Node::List(list) => list.extend(items),
            _ => return Err(format!("APPEND(S) to {}, not a list", self.kind(top))),
        }
        Ok(())
    }

    fn set_items(&mut self, pairs: Vec<(NodeId, NodeId)>) -> Result<(), String> {
        let top = self.top()?;
        match &mut self.arena[top] {
            Node::Dict(dict) => dict.extend(pairs),
            _ => return Err(format!("SETITEM(S) on {}, not a dict", self.kind(top))),
        }
        Ok(())
    }

    /// What a node is, for error messages.
    fn kind(&self, id: NodeId) -> String {
        match &self.arena[id] {
            Node::Leaf(v) => describe(v),
            Node::Tuple(items) => format!("a tuple of {} items", items.len()),
            Node::List(items) => format!("a list of {} items", items.len()),
            Node::Dict(items) => format!("a dict of {} items", items.len()),
            Node::Object { class, .. } => format!("an object of {class}"),
        }
    }

    /// The memo: naming the top of the stack by a key, and pushing it again. Both share the
    /// node, as Python shares the object.
    fn memo_op(&mut self, op: Opcode) -> Result<(), String> {
        match op {
            Opcode::BinPut | Opcode::LongBinPut | Opcode::Memoize => {
                let key = if op == Opcode::Memoize {
                    self.memo.len()
                } else {
                    self.operand(op)?
                } as u32;
                let top = self.top()?;
                self.memo.insert(key, top);
            }
            Opcode::BinGet | Opcode::LongBinGet => {
                let key = self.operand(op)? as u32;
                let id = *self
                    .memo
                    .get(&key)
                    .ok_or_else(|| format!("pickle memo key {key} is undefined"))?;
                self.stack.push(Slot::Node(id));
            }
            _ => unreachable!("{op:?} is not a memo opcode"),
        }
        Ok(())
    }

    /// Globals (allow-listed), persistent storages, calls, NEWOBJ and BUILD.
    fn object_op(&mut self, op: Opcode) -> Result<(), String> {
        match op {
            Opcode::Global => {
                let module = self.line()?;
                let name = self.line()?;
                self.push_leaf(global(module, name)?);
            }
            Opcode::StackGlobal => {
                let name = self.pop()?;
                let module = self.pop()?;
                let value = match (&self.arena[module], &self.arena[name]) {
                    (Node::Leaf(Value::Str(m)), Node::Leaf(Value::Str(n))) => {
                        global(m.clone(), n.clone())?
                    }
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                };
                self.push_leaf(value);
            }
            Opcode::BinPersId => {
                let pid = self.pop()?;
                let pid = self.materialise(pid, 1)?;
                self.push_leaf(persistent_storage(pid)?);
            }
            Opcode::Reduce => {
                let args = self.pop()?;
                let func = self.pop()?;
                let func = self.materialise(func, 1)?;
                let args = self.materialise(args, 1)?;
                self.push_value(call(func, args)?);
            }
            Opcode::NewObj => {
                let _args = self.pop()?;
                let cls = self.pop()?;
                let cls = self.materialise(cls, 1)?;
                self.push_value(new_object(cls)?);
            }
            Opcode::Build => {
                let state = self.pop()?;
                let top = self.top()?;
                match &mut self.arena[top] {
                    Node::Object { class, .. } if class.starts_with("numpy.dtype:") => {}
                    Node::Object { state: s, .. } => *s = Some(state),
                    // OrderedDict._metadata and tensor hooks: irrelevant to the values.
                    Node::Dict(_) | Node::Leaf(Value::Tensor(_)) => {}
                    _ => return Err(format!("BUILD on {} is not allowed", self.kind(top))),
                }
            }
            _ => unreachable!("{op:?} is not an object opcode"),
        }
        Ok(())
    }
}

/// Keys and values alternating, as pairs.
fn pairs(ids: &[NodeId]) -> Result<Vec<(NodeId, NodeId)>, String> {
    if !ids.len().is_multiple_of(2) {
        return Err("odd number of items for a dict".into());
    }
    Ok(ids.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
}

/// LONG1's operand: little-endian two's complement of up to 8 bytes.
fn twos_complement(bytes: &[u8]) -> Result<i64, String> {
    let n = bytes.len();
    if n > 8 {
        return Err("integer too large in pickle".into());
    }
    let negative = n > 0 && bytes[n - 1] & 0x80 != 0;
    let mut buf = [if negative { 0xff } else { 0 }; 8];
    buf[..n].copy_from_slice(bytes);
    Ok(i64::from_le_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::twos_complement;

    #[test]
    fn long1_reads_the_sign_from_the_last_byte() {
        assert_eq!(twos_complement(&[]), Ok(0));
        assert_eq!(twos_complement(&[0xff]), Ok(-1));
        assert_eq!(twos_complement(&[0x80, 0x00]), Ok(128));
        assert_eq!(twos_complement(&[0x00, 0x80]), Ok(-32768));
        assert!(twos_complement(&[0; 9]).is_err());
    }
}
