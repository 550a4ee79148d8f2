// Uploads a file with tus-js-client, a tus client Cascade did not write, in
// parallel partial uploads joined by a final upload (the concatenation
// extension, tus-js-client's `parallelUploads`), for the integration tests.
//
//   node tus_parallel.mjs <ingest base URL> <API key> <file> <parallel uploads> <chunk size>
//
// Prints `DONE <final upload URL>`, or `ERROR <message>` and exits 1.
import { readFileSync } from 'node:fs'
import { Upload } from 'tus-js-client'

const [endpoint, key, file, parallel, chunkSize] = process.argv.slice(2)
const upload = new Upload(readFileSync(file), {
  endpoint: `${endpoint}/v1/uploads`,
  headers: { Authorization: `Bearer ${key}` },
  parallelUploads: Number(parallel),
  chunkSize: Number(chunkSize),
  metadata: { filename: 'parallel-upload.mp4' },
  retryDelays: [],
  onError (error) {
    console.log(`ERROR ${error}`)
    process.exit(1)
  },
  onSuccess () {
    console.log(`DONE ${upload.url}`)
  }
})
upload.start()
