"""Fine-tuning: seeded batches (:mod:`.batches`), freezing and optimizer parameter groups
(:mod:`.freeze`), the training loop shared by every method (:mod:`.training`), surgical
fine-tuning of chosen groups (:mod:`.surgical`), Auto-RGN and Auto-SNR (:mod:`.rgn`), the exact
frozen-prefix cache (:mod:`.prefix_cache`) and the plain records a run returns (:mod:`.records`)."""
