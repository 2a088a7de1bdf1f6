// TEMPORARY until symbolize/go lands.
pub struct GoTable;
pub struct GoFrame { pub function: String, pub file: Option<String>, pub line: Option<u32>, pub inlined: bool }
impl GoTable {
    pub fn from_elf(_d: &[u8]) -> Result<Option<GoTable>, String> { Ok(None) }
    pub fn symbolize(&self, _pc: u64) -> Option<Vec<GoFrame>> { None }
    pub fn sp_delta(&self, _pc: u64) -> Option<u64> { None }
    pub fn is_stack_root(&self, _pc: u64) -> bool { false }
    pub fn text_range(&self) -> std::ops::Range<u64> { 0..0 }
}
