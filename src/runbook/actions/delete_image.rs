//! `aws:deleteImage`: deregisters an AMI and deletes its snapshots.
//!
//! Not built yet: a step of this action is refused at load (issue 14 builds it).

not_built_yet!(DeleteImage, DeleteImage);
