//! A state dict: named f32 tensors in a fixed order.

use std::collections::HashMap;

/// One tensor: its shape and row-major f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// Shape (PyTorch layout).
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// Named tensors in the order they were stored (the order of `model.state_dict()`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDict {
    entries: Vec<(String, TensorEntry)>,
    index: HashMap<String, usize>,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) {
        let name = name.into();
        let entry = TensorEntry { shape, values };
        match self.index.get(&name) {
            Some(&i) => self.entries[i].1 = entry,
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, entry));
            }
        }
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    /// Removes and returns the tensor called `name`.
    pub fn take(&mut self, name: &str) -> Option<TensorEntry> {
        let i = *self.index.get(name)?;
        let entry = std::mem::replace(
            &mut self.entries[i].1,
            TensorEntry {
                shape: Vec::new(),
                values: Vec::new(),
            },
        );
        Some(entry)
    }

    /// Names in stored order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, tensor)` pairs in stored order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TensorEntry)> {
        self.entries.iter().map(|(n, e)| (n.as_str(), e))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total number of values.
    pub fn numel(&self) -> usize {
        self.entries.iter().map(|(_, e)| e.values.len()).sum()
    }
}
