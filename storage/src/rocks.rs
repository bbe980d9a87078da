//! The RocksDB backend.

use std::path::Path;
use std::sync::Mutex;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    Direction, IteratorMode, Options, SnapshotWithThreadMode, WriteBatch, WriteOptions,
};
use tally_crypto::Digest;

use crate::{
    BlockCommit, Entry, META_INITIALIZED, META_LATEST_HEIGHT, StateInstall, StateSnapshot,
    StorageError, Store, Write, decode_height,
};

const CF_BLOCKS: &str = "blocks";
const CF_TX_INDEX: &str = "tx_index";
const CF_STATE: &str = "state";
const CF_CONSENSUS: &str = "consensus";
const CF_META: &str = "meta";
const CF_EVIDENCE: &str = "evidence";
const CF_BATCHES: &str = "batches";
const COLUMN_FAMILIES: [&str; 7] = [
    CF_BLOCKS,
    CF_TX_INDEX,
    CF_STATE,
    CF_CONSENSUS,
    CF_META,
    CF_EVIDENCE,
    CF_BATCHES,
];

/// A [`Store`] on RocksDB.
pub struct RocksStore {
    db: DB,
    /// Serialises block commits so the height check and the write are one step.
    commit: Mutex<()>,
}

/// How old a bottommost file must be before RocksDB rewrites it only because a snapshot
/// that protected some of its keys was released (docs/architecture.md).
pub const BOTTOMMOST_COMPACTION_DELAY_SECS: u32 = 3600;

/// The block cache all column families share.
pub const BLOCK_CACHE_BYTES: usize = 32 * 1024 * 1024;

fn db_err(e: rocksdb::Error) -> StorageError {
    StorageError::Db(e.into_string())
}

impl RocksStore {
    /// Opens (or creates) the database in `path`.
    pub fn open(path: &Path) -> Result<RocksStore, StorageError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        // Bounded: the node's open-file count must not grow with the database.
        db_opts.set_max_open_files(512);
        db_opts.increase_parallelism(2);
        db_opts.set_keep_log_file_num(4);
        // Bounded memory: all memtables together stay under 64 MiB.
        db_opts.set_db_write_buffer_size(64 * 1024 * 1024);
        // Bounded write-ahead log: the meta and consensus families change every block but
        // stay small, so without a bound their memtables never flush and keep every log file
        // alive (230 MB after 45 s at 5,000 tx/s; all of it replayed at restart). Past 64 MB
        // they are flushed and old logs are reused rather than deleted: overwriting a file
        // already in the page cache is much cheaper than growing a new one (on this VM a
        // fresh page costs a hypervisor fault). Recycling is safe with the default
        // point-in-time recovery mode (each record names its log).
        db_opts.set_max_total_wal_size(64 * 1024 * 1024);
        db_opts.set_recycle_log_file_num(4);
        // The transaction index's hash memtable takes one writer at a time.
        db_opts.set_allow_concurrent_memtable_write(false);

        // Bounded memory: one block cache for every column family. Each family's table
        // options would otherwise make their own (32 MiB each in RocksDB 8+: 224 MiB for
        // seven), and under load they filled: 6 → 64 MB in 40 s on one node at 2× the
        // sustainable rate (`tally_storage_memory_bytes{kind="block_cache"}`).
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cfs = COLUMN_FAMILIES.iter().map(|name| {
            let mut o = Options::default();
            let mut t = BlockBasedOptions::default();
            t.set_block_cache(&cache);
            // LZ4 at every level, the last included: zstd there cost the compaction threads
            // CPU the validators need (they share the cores) for a smaller disk.
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_write_buffer_size(16 * 1024 * 1024);
            if matches!(*name, CF_TX_INDEX | CF_STATE) {
                // Point lookups dominate: a bloom filter saves a disk read per miss.
                t.set_bloom_filter(10.0, false);
                // And in the memtable: most reads (a new data key, a transaction's index
                // entry) miss it, and without a filter each miss walks the skiplist.
                o.set_memtable_prefix_bloom_ratio(0.1);
                o.set_memtable_whole_key_filtering(true);
            }
            if *name == CF_TX_INDEX {
                // Point lookups only, never scanned: a hash memtable makes each insert of a
                // random digest one bucket instead of a skiplist search (docs/architecture.md).
                // Its buckets are keyed on a prefix; a digest's first 8 bytes are uniform.
                o.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(8));
                o.set_memtable_factory(rocksdb::MemtableFactory::HashLinkList {
                    bucket_count: 1 << 18,
                });
            }
            o.set_block_based_table_factory(&t);
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(db_err)?;
        for name in COLUMN_FAMILIES {
            let cf = db
                .cf_handle(name)
                .expect("column families are created at open");
            db.set_options_cf(
                &cf,
                &[(
                    "bottommost_file_compaction_delay",
                    &BOTTOMMOST_COMPACTION_DELAY_SECS.to_string(),
                )],
            )
            .map_err(db_err)?;
        }
        Ok(RocksStore {
            db,
            commit: Mutex::new(()),
        })
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError> {
        let mut o = WriteOptions::default();
        o.set_sync(sync);
        self.db.write_opt(batch, &o).map_err(db_err)
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.cf(cf), key).map_err(db_err)
    }
}

impl Store for RocksStore {
    fn commit_block(&self, c: BlockCommit) -> Result<(), StorageError> {
        let _guard = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        let latest = self.latest_height()?;
        if c.height != latest + 1 {
            return Err(StorageError::OutOfOrder {
                expected: latest + 1,
                got: c.height,
            });
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_BLOCKS), c.height.to_be_bytes(), &c.block);
        // In key order: the memtable's skiplist then starts each insert from where the last
        // one ended instead of from its top (random digests cost a full search each, ≈ 8% of
        // a node's CPU under load). Stable sorts: writes to one key keep their order.
        let mut tx_index = c.tx_index;
        tx_index.sort_by_key(|e| e.0);
        let index = self.cf(CF_TX_INDEX);
        for (hash, value) in &tx_index {
            batch.put_cf(index, hash.0, value);
        }
        let mut state = c.state;
        state.sort_by(|a, b| a.0.cmp(&b.0));
        let state_cf = self.cf(CF_STATE);
        for (k, v) in &state {
            match v {
                Some(v) => batch.put_cf(state_cf, k, v),
                None => batch.delete_cf(state_cf, k),
            }
        }
        let meta = self.cf(CF_META);
        for (k, v) in &c.meta {
            batch.put_cf(meta, k, v);
        }
        batch.put_cf(meta, META_LATEST_HEIGHT, c.height.to_le_bytes());
        self.write(batch, c.sync)
    }

    fn latest_height(&self) -> Result<u64, StorageError> {
        match self.get(CF_META, META_LATEST_HEIGHT)? {
            Some(b) => decode_height(&b),
            None => Ok(0),
        }
    }

    fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StorageError> {
        // Big-endian keys keep blocks in height order on disk.
        self.get(CF_BLOCKS, &height.to_be_bytes())
    }

    fn tx_index(&self, hash: &Digest) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(CF_TX_INDEX, &hash.0)
    }

    fn state_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(CF_STATE, key)
    }

    fn state_scan(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StorageError> {
        let mode = match after {
            Some(a) => IteratorMode::From(a, Direction::Forward),
            None => IteratorMode::Start,
        };
        scan(self.db.iterator_cf(self.cf(CF_STATE), mode), after, limit)
    }

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(CF_META, key)
    }

    fn initialize(&self, state: Vec<Entry>, meta: Vec<Entry>) -> Result<(), StorageError> {
        let _guard = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        if self.get(CF_META, META_INITIALIZED)?.is_some() {
            return Err(StorageError::AlreadyInitialized);
        }
        let mut batch = WriteBatch::default();
        for (k, v) in &state {
            batch.put_cf(self.cf(CF_STATE), k, v);
        }
        for (k, v) in &meta {
            batch.put_cf(self.cf(CF_META), k, v);
        }
        batch.put_cf(self.cf(CF_META), META_INITIALIZED, [1]);
        self.write(batch, true)
    }

    fn meta_put(&self, entries: &[Entry], sync: bool) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for (k, v) in entries {
            batch.put_cf(self.cf(CF_META), k, v);
        }
        self.write(batch, sync)
    }

    fn write_consensus(
        &self,
        writes: &[Write],
        delete_ranges: &[(Vec<u8>, Vec<u8>)],
        sync: bool,
    ) -> Result<(), StorageError> {
        let cf = self.cf(CF_CONSENSUS);
        let mut batch = WriteBatch::default();
        for (start, end) in delete_ranges {
            batch.delete_range_cf(cf, start, end);
        }
        for (k, v) in writes {
            match v {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
        }
        self.write(batch, sync)
    }

    fn consensus_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(CF_CONSENSUS, key)
    }

    fn consensus_scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(prefix, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_CONSENSUS), mode) {
            let (k, v) = item.map_err(db_err)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn evidence_put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_EVIDENCE), key, value);
        self.write(batch, true)
    }

    fn evidence_scan(&self) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_EVIDENCE), IteratorMode::Start)
        {
            let (k, v) = item.map_err(db_err)?;
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn batches_put(&self, entries: &[Entry], sync: bool) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_BATCHES);
        for (k, v) in entries {
            batch.put_cf(cf, k, v);
        }
        self.write(batch, sync)
    }

    fn sync_writes(&self) -> Result<(), StorageError> {
        // Writes go to the log file as they are made (no manual WAL flush), so syncing the
        // log makes all of them durable.
        self.db.flush_wal(true).map_err(db_err)
    }

    fn batch_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(CF_BATCHES, key)
    }

    fn batches_delete(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_BATCHES);
        for k in keys {
            batch.delete_cf(cf, k);
        }
        self.write(batch, false)
    }

    fn batches_scan(&self) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_BATCHES), IteratorMode::Start)
        {
            let (k, v) = item.map_err(db_err)?;
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn snapshot(&self) -> Box<dyn StateSnapshot + '_> {
        Box::new(RocksSnapshot {
            store: self,
            snapshot: self.db.snapshot(),
        })
    }

    fn install_state(&self, install: StateInstall) -> Result<(), StorageError> {
        let _guard = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        let latest = self.latest_height()?;
        let mut batch = WriteBatch::default();
        // The old state goes key by key (a range delete would need a bound above every key).
        let state = self.cf(CF_STATE);
        for item in self.db.iterator_cf(state, IteratorMode::Start) {
            let (k, _) = item.map_err(db_err)?;
            batch.delete_cf(state, k);
        }
        let mut entries = install.state;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in &entries {
            batch.put_cf(state, k, v);
        }
        let blocks = self.cf(CF_BLOCKS);
        if latest > install.height {
            batch.delete_range_cf(
                blocks,
                (install.height + 1).to_be_bytes(),
                (latest + 1).to_be_bytes(),
            );
        }
        for (h, b) in &install.blocks {
            batch.put_cf(blocks, h.to_be_bytes(), b);
        }
        let index = self.cf(CF_TX_INDEX);
        for h in &install.tx_index_delete {
            batch.delete_cf(index, h.0);
        }
        for (h, v) in &install.tx_index_put {
            batch.put_cf(index, h.0, v);
        }
        let meta = self.cf(CF_META);
        for (k, v) in &install.meta {
            batch.put_cf(meta, k, v);
        }
        batch.put_cf(meta, META_LATEST_HEIGHT, install.height.to_le_bytes());
        self.write(batch, true)
    }

    fn memory_usage(&self) -> crate::MemoryUsage {
        let prop = |cf: &str, name: &str| {
            self.db
                .property_int_value_cf(self.cf(cf), name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let mut m = crate::MemoryUsage::default();
        for cf in COLUMN_FAMILIES {
            m.memtables += prop(cf, "rocksdb.cur-size-all-mem-tables");
            // One cache shared by every family: each reports the same usage.
            m.block_cache = m.block_cache.max(prop(cf, "rocksdb.block-cache-usage"));
            m.table_readers += prop(cf, "rocksdb.estimate-table-readers-mem");
        }
        m
    }

    fn size_bytes(&self) -> u64 {
        COLUMN_FAMILIES
            .iter()
            .filter_map(|cf| {
                let cf = self.cf(cf);
                let sst = self
                    .db
                    .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
                    .ok()
                    .flatten()?;
                let mem = self
                    .db
                    .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                Some(sst + mem)
            })
            .sum()
    }
}

/// A RocksDB snapshot: reads see the database as it was when taken.
struct RocksSnapshot<'a> {
    store: &'a RocksStore,
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

impl StateSnapshot for RocksSnapshot<'_> {
    fn latest_height(&self) -> Result<u64, StorageError> {
        match self
            .snapshot
            .get_cf(self.store.cf(CF_META), META_LATEST_HEIGHT)
            .map_err(db_err)?
        {
            Some(b) => decode_height(&b),
            None => Ok(0),
        }
    }

    fn state_scan(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StorageError> {
        let mode = match after {
            Some(a) => IteratorMode::From(a, Direction::Forward),
            None => IteratorMode::Start,
        };
        let state = self.store.cf(CF_STATE);
        scan(self.snapshot.iterator_cf(state, mode), after, limit)
    }
}

/// Up to `limit` entries of `items` with keys strictly after `after`.
fn scan(
    items: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<Entry>, StorageError> {
    let mut out = Vec::new();
    for item in items {
        let (k, v) = item.map_err(db_err)?;
        if Some(&*k) == after {
            continue;
        }
        out.push((k.into_vec(), v.into_vec()));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}
